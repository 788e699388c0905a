# shellcheck shell=bash disable=SC2034  # globals the later steps read
# test/gpu/steps/55-nvidia-smi.sh — nvidia-smi inside a 2 GiB slice
# Sourced by test/gpu/run.sh (see its header): runs in its shell, with test/gpu/lib.sh's
# variables and functions; a step reports through result/note and never exits
# unless the run cannot go on.
#
# `nvidia-smi --query-gpu=memory.total,memory.used` under LD_PRELOAD=libvgpu.so in a
# 2 GiB slice must show memory.total = 2048 MiB (libvgpu's nvmlDeviceGetMemoryInfo(_v2)).
# nvidia-smi may reach NVML another way (its internal export table, or a library
# libvgpu's symbols do not interpose), so besides what it shows this records how it
# binds NVML, for whoever fixes it on a GPU machine:
#   nvidia-smi-query.txt     the query bare and in the slice, plain nvidia-smi in the slice
#   nvidia-smi-bindings.txt  LD_DEBUG=bindings in the slice, the lines naming nvml or
#                            libvgpu: which NVML entry points it binds, and to which library
#   nvidia-smi-libs.txt      LD_DEBUG=libs: what it loads (and dlopens) and in what order
#   nvidia-smi-elf.txt       its ELF: NEEDED, dynamic symbols (nvml*, dl*); libvgpu's and
#                            libnvidia-ml's NVML exports
#   nvidia-smi-vgpulog.txt   libvgpu's own log (VGPU_LOG_LEVEL=debug) in the slice

nvidia_smi_slice() {
    local name=nvidia-smi-slice smi slice=$WORK/slice-nvidia-smi q=$OUT/nvidia-smi-query.txt
    local query=("--query-gpu=memory.total,memory.used" "--format=csv,noheader,nounits")
    smi=$(command -v nvidia-smi)
    if [ -z "$smi" ]; then
        result FAIL "$name" "nvidia-smi not found"
        return
    fi
    if ! make_slice "$slice"; then
        result FAIL "$name" "vgpuctl slice create failed (see run.log)"
        return
    fi
    local rc
    {
        echo "## bare: nvidia-smi ${query[*]}"
        timeout 30 nvidia-smi "${query[@]}"
        echo "## exit $?"
    } >"$q.bare" 2>&1
    with_vgpu "$slice" timeout 30 nvidia-smi "${query[@]}" >"$q.slice" 2>&1
    rc=$?
    {
        cat "$q.bare"
        echo "## in the slice (LD_PRELOAD=$LIBVGPU VGPU_SLICE_DIR=<2 GiB slice>): nvidia-smi ${query[*]}"
        cat "$q.slice"
        echo "## exit $rc"
        echo "## in the slice: nvidia-smi"
        with_vgpu "$slice" timeout 30 nvidia-smi
        echo "## exit $?"
    } >"$q" 2>&1
    with_vgpu "$slice" env LD_DEBUG=bindings timeout 60 nvidia-smi "${query[@]}" >/dev/null 2>"$WORK/smi-bindings"
    {
        echo "# LD_DEBUG=bindings of nvidia-smi ${query[*]} in the slice: the lines naming nvml or libvgpu"
        local own all
        own=$(grep "binding file $(readlink -f "$smi") " "$WORK/smi-bindings" | grep "symbol \`nvml")
        all=$(grep "symbol \`nvml" "$WORK/smi-bindings")
        echo "# nvml* bindings of nvidia-smi itself: $(grep -c . <<<"$own") (to libvgpu.so: $(grep -c 'to [^ ]*libvgpu\.so' <<<"$own"), to libnvidia-ml: $(grep -c 'to [^ ]*libnvidia-ml' <<<"$own")); of every object: $(grep -c . <<<"$all") (to libvgpu.so: $(grep -c 'to [^ ]*libvgpu\.so' <<<"$all"))"
        grep -iE 'nvml|libvgpu' "$WORK/smi-bindings" | head -n 3000
    } >"$OUT/nvidia-smi-bindings.txt"
    with_vgpu "$slice" env LD_DEBUG=libs timeout 60 nvidia-smi "${query[@]}" >/dev/null 2>"$WORK/smi-libs"
    {
        echo "# LD_DEBUG=libs of nvidia-smi ${query[*]} in the slice (init/calling lines left out)"
        grep -vE 'calling init|calling fini' "$WORK/smi-libs" | head -n 2000
    } >"$OUT/nvidia-smi-libs.txt"
    {
        echo "## nvidia-smi: $smi -> $(readlink -f "$smi")"
        file -L "$smi" 2>&1
        echo "## NEEDED"
        readelf -d "$(readlink -f "$smi")" 2>&1 | grep -E 'NEEDED|RPATH|RUNPATH'
        echo "## its dynamic symbols naming nvml, dl*, or an export table"
        nm -D "$(readlink -f "$smi")" 2>&1 | grep -iE 'nvml|[^a-z]dl(open|sym|vsym|info)|ExportTable' | head -n 200
        echo "## libvgpu's NVML exports"
        nm -D --defined-only "$LIBVGPU" | grep -i nvml
        echo "## $REAL_LIBNVML: NVML exports $(nm -D --defined-only "$REAL_LIBNVML" 2>/dev/null | grep -c ' nvml'), the memory and export-table ones"
        nm -D --defined-only "$REAL_LIBNVML" 2>&1 | grep -iE 'MemoryInfo|ExportTable'
    } >"$OUT/nvidia-smi-elf.txt" 2>&1
    with_vgpu "$slice" env VGPU_LOG_LEVEL=debug timeout 30 nvidia-smi "${query[@]}" >"$OUT/nvidia-smi-vgpulog.txt" 2>&1
    rm -f "$q.bare" "$q.slice"

    local total used card want=$((SLICE_LIMIT >> 20))
    total=$(awk '/^## in the slice \(/ {getline; print; exit}' "$q" | awk -F', *' '{gsub(/[^0-9]/, "", $1); print $1}')
    used=$(awk '/^## in the slice \(/ {getline; print; exit}' "$q" | awk -F', *' '{gsub(/[^0-9]/, "", $2); print $2}')
    card=$(awk '/^## bare:/ {getline; print; exit}' "$q" | awk -F', *' '{gsub(/[^0-9]/, "", $1); print $1}')
    local detail
    detail="in a $want MiB slice nvidia-smi shows memory.total ${total:-?} MiB, memory.used ${used:-?} MiB (bare: total ${card:-?} MiB; exit $rc); nvml bindings to libvgpu: $(sed -n 2p "$OUT/nvidia-smi-bindings.txt" | sed 's/^# //')"
    if [ "$rc" = 0 ] && [ "$total" = "$want" ]; then
        result PASS "$name" "$detail"
    elif [ "${GPU_RUN_SMI_STANDIN:-0}" = 1 ]; then
        result SKIP "$name" "nvidia-smi is a stand-in here that reads the simulated node, not NVML: recorded, not judged; $detail"
    else
        result FAIL "$name" "$detail; want total $want: see nvidia-smi-*.txt for how it binds NVML"
    fi
}

if [ "$HAVE_GO_BINS" = 0 ]; then
    result SKIP nvidia-smi-slice "no bin/vgpuctl to create slices"
else
    nvidia_smi_slice
fi
