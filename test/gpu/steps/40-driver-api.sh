# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/40-driver-api.sh — driver_check through every interception path in a 2 GiB slice
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.

if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP driver-api "no bin/vgpuctl to create slices"
elif [ -n "$DRIVER_CHECK" ]; then
    for path in linked dlsym procaddr vmm async; do
        slice=$WORK/slice-driver-$path
        if ! make_slice "$slice"; then
            result FAIL "driver-$path" "vgpuctl slice create failed (see run.log)"
            continue
        fi
        out=$OUT/driver_check-$path.json
        log "driver_check --path $path"
        with_vgpu "$slice" timeout 120 "$DRIVER_CHECK" --limit "$SLICE_LIMIT" --context-overhead "$CTX_BYTES" \
            --chunk "$CHUNK" --path "$path" --driver-slack "$DRIVER_SLACK" --expect-libvgpu \
            >"$out" 2>>"$LOG"
        rc=$?
        detail="exit $rc, admitted $(json_field "$out" admitted) bytes in $(json_field "$out" blocks) blocks, driver per-process $(json_field "$out" driver_used)"
        failed=$(python3 -c 'import json,sys
try:
    r = json.load(open(sys.argv[1]))
    print(", ".join(c["name"] + " (" + c["detail"] + ")" for c in r["checks"] if not c["ok"]))
except Exception as e:
    print("no result: %s" % e)' "$out" 2>/dev/null)
        if [ $rc = 0 ]; then result PASS "driver-$path" "$detail"; else result FAIL "driver-$path" "$detail; failed: $failed"; fi
    done
fi
