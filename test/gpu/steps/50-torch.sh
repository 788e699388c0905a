# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/50-torch.sh — PyTorch (torch_check.py) in a slice, three allocator settings
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP torch "no bin/vgpuctl to create slices"
elif ! timeout 120 python3 -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' >>"$LOG" 2>&1; then
    result FAIL torch "PyTorch with CUDA is not usable here (see env.txt)"
else
    for conf in default expandable_segments:True backend:cudaMallocAsync; do
        label=${conf%%:*}
        slice=$WORK/slice-torch-$label
        if ! make_slice "$slice"; then
            result FAIL "torch-$label" "vgpuctl slice create failed"
            continue
        fi
        out=$OUT/torch-$label.json
        if [ "$conf" = default ]; then
            confenv=(-u PYTORCH_CUDA_ALLOC_CONF)
        else
            confenv=(PYTORCH_CUDA_ALLOC_CONF="$conf")
        fi
        log "torch_check ($conf)"
        with_vgpu "$slice" env "${confenv[@]}" timeout 240 python3 test/gpu/torch_check.py \
            --limit "$SLICE_LIMIT" --context-overhead "$CTX_BYTES" --chunk-mib $((CHUNK >> 20)) \
            --label "$conf" >"$out" 2>>"$LOG"
        rc=$?
        detail="exit $rc, total $(python3 -c 'import json,sys
try: print(json.load(open(sys.argv[1]))["mem_get_info"]["total"])
except Exception: print("?")' "$out" 2>/dev/null), admitted $(json_field "$out" admitted) bytes, stop: $(json_field "$out" oom_message | cut -c1-120)"
        if [ $rc = 0 ]; then result PASS "torch-$label" "$detail"; else result FAIL "torch-$label" "$detail; error: $(json_field "$out" error)"; fi
    done
fi
