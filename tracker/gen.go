package tracker

// The BPF programs (bpf/tracker.bpf.c) compiled into tracker_bpfel.o and its
// Go loader tracker_bpfel.go. Both are committed so that building vgpu needs
// no clang; `make generate` reruns this with Debian 12's clang-14 and fails if
// the committed files differ. The arch include dir holds <asm/types.h> that
// <linux/types.h> needs (Debian's multiarch layout). -Wno-unused-parameter:
// libbpf's BPF_PROG macro declares ctx and every hooked argument, used or not.
//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-14 -strip llvm-strip-14 -cflags "-O2 -g -Wall -Wextra -Werror -Wno-unused-parameter -I/usr/include/x86_64-linux-gnu" -target bpfel -type event tracker bpf/tracker.bpf.c
