# vgpu — build and test.
#
#   make build   libvgpu, the simulated driver, test programs and the Go binaries
#   make test    everything above, then every gate and test, each part timed (installs
#                what it needs: Debian 12, root); the parts run alone too:
#                make lint, fmt-c-check, test-race, sanitize, test-all, test-unit (no root,
#                no build: seconds)
#   make generate  the tracker's BPF objects from tracker/bpf/ (Debian 12's clang-14,
#                installed when missing); fails if the committed ones differ
#   make bench   the benchmarks on the simulated node (vgpu-bench suite: JSON + Markdown, plots
#                and index.md/index.html under bench/results/; BENCH_FLAGS=--quick: a short run)
#   make run     vgpud and a capped workload (real GPUs, or a simulated node)
#
# Nothing here needs a CUDA toolkit: libvgpu and the simulated driver declare the
# driver-API/NVML ABI they use in libvgpu/include/vgpu_cuda.h.

CC      ?= gcc
GO      ?= go
BUILD   := build
BIN     := bin

CWARN   := -Wall -Wextra -Werror
# Extra flags for every C compile and link (make sanitize sets the sanitizers).
CSAN    ?=
CFLAGS  := -std=gnu11 -O2 -g $(CWARN) -fPIC -Ilibvgpu/include $(CSAN)
# libvgpu: everything hidden except the hooks (marked VGPU_EXPORT in the sources).
LIBVGPU_CFLAGS := $(CFLAGS) -fvisibility=hidden -pthread
LIBVGPU_LDFLAGS := -shared -Wl,-soname,libvgpu.so -Wl,--no-undefined -ldl -pthread
# Loads on glibc >= 2.17 (CUDA base images): every source gets the symbol version
# pins of vgpu_glibc.h; libdl/libpthread by name, where old glibc defines those symbols.
LIBVGPU_CFLAGS += -include libvgpu/src/vgpu_glibc.h
LIBVGPU_LDFLAGS += -Wl,--no-as-needed -l:libdl.so.2 -l:libpthread.so.0
# The simulated driver binds its own symbols internally (-Bsymbolic) so that an
# interposer never sees the driver calling itself, exactly like the real libcuda.
SIM_CFLAGS  := $(CFLAGS) -fvisibility=hidden -pthread -Itest/simgpu
SIM_LDFLAGS := -shared -Wl,-Bsymbolic -Wl,--no-undefined -pthread -lrt -ldl

LIBVGPU_SRC := $(wildcard libvgpu/src/*.c)
LIBVGPU_HDR := $(wildcard libvgpu/include/*.h libvgpu/src/*.h)
# The simulated libcuda is test/simgpu/cuda_*.c (one file per area, cuda_internal.h
# between them); libnvidia-ml is nvml.c; both add every other .c (state, pid view).
SIM_CUDA_SRC := $(wildcard test/simgpu/cuda_*.c)
SIM_COMMON  := $(filter-out $(SIM_CUDA_SRC) test/simgpu/nvml.c,$(wildcard test/simgpu/*.c))
SIM_HDR     := $(wildcard test/simgpu/*.h) libvgpu/include/vgpu_cuda.h

# Test programs: test/cprog/<name>.c -> build/test/<name>. Every program links the
# driver it is given at run time (LD_LIBRARY_PATH), so the same binaries run on the
# simulated node and on a real GPU. Programs named dl_* use dlopen only. Their shared
# helpers (testutil.h) are compiled once into build/testutil/libtestutil.a, linked
# into every program: testutil.o references no driver symbol (so dl_* link it
# without libcuda); testutil_linked.o does, and an archive member is pulled in only
# by a program that references it.
CPROG_CFLAGS := -std=gnu11 -O2 -g $(CWARN) -Ilibvgpu/include -Itest/cprog $(CSAN)
TESTUTIL_SRC := test/cprog/testutil.c test/cprog/testutil_linked.c
TESTUTIL_LIB := $(BUILD)/testutil/libtestutil.a
CPROG_HDR := $(wildcard test/cprog/*.h) libvgpu/include/vgpu_cuda.h
CPROG_SRC := $(filter-out $(TESTUTIL_SRC),$(wildcard test/cprog/*.c))
CPROG_BIN := $(patsubst test/cprog/%.c,$(BUILD)/test/%,$(CPROG_SRC))

# go-nvml's cgo header marks old NVML entry points deprecated; the warnings are noise.
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

.PHONY: all build clib go test vet fmt-check fmt-c fmt-c-check clang-format-dep sanitize deps bench run clean

all: build

build: clib go

clib: $(BUILD)/libvgpu.so $(BUILD)/simgpu/libcuda.so.1 $(BUILD)/simgpu/libnvidia-ml.so.1 $(CPROG_BIN)

$(BUILD)/libvgpu.so: $(LIBVGPU_SRC) $(LIBVGPU_HDR)
	@mkdir -p $(@D)
	$(CC) $(LIBVGPU_CFLAGS) -o $@ $(LIBVGPU_SRC) $(LIBVGPU_LDFLAGS)

$(BUILD)/simgpu/libcuda.so.1: $(SIM_CUDA_SRC) $(SIM_COMMON) $(SIM_HDR)
	@mkdir -p $(@D)
	$(CC) $(SIM_CFLAGS) -o $@ $(SIM_CUDA_SRC) $(SIM_COMMON) -Wl,-soname,libcuda.so.1 $(SIM_LDFLAGS)
	ln -sf libcuda.so.1 $(BUILD)/simgpu/libcuda.so

$(BUILD)/simgpu/libnvidia-ml.so.1: test/simgpu/nvml.c $(SIM_COMMON) $(SIM_HDR)
	@mkdir -p $(@D)
	$(CC) $(SIM_CFLAGS) -o $@ test/simgpu/nvml.c $(SIM_COMMON) -Wl,-soname,libnvidia-ml.so.1 $(SIM_LDFLAGS)
	ln -sf libnvidia-ml.so.1 $(BUILD)/simgpu/libnvidia-ml.so

# Test programs link libcuda/libnvidia-ml by soname; at run time LD_LIBRARY_PATH
# picks the simulated or the real driver.
$(BUILD)/testutil/%.o: test/cprog/%.c $(CPROG_HDR)
	@mkdir -p $(@D)
	$(CC) $(CPROG_CFLAGS) -c -o $@ $<

$(TESTUTIL_LIB): $(patsubst test/cprog/%.c,$(BUILD)/testutil/%.o,$(TESTUTIL_SRC))
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/test/dl_%: test/cprog/dl_%.c $(CPROG_HDR) $(TESTUTIL_LIB) $(BUILD)/simgpu/libcuda.so.1
	@mkdir -p $(@D)
	$(CC) $(CPROG_CFLAGS) -o $@ $< $(TESTUTIL_LIB) -ldl -pthread

$(BUILD)/test/%: test/cprog/%.c $(CPROG_HDR) $(TESTUTIL_LIB) $(BUILD)/simgpu/libcuda.so.1 $(BUILD)/simgpu/libnvidia-ml.so.1
	@mkdir -p $(@D)
	$(CC) $(CPROG_CFLAGS) -o $@ $< $(TESTUTIL_LIB) \
		-L$(BUILD)/simgpu -l:libcuda.so.1 -l:libnvidia-ml.so.1 -ldl -pthread -lm

# Every command in cmd/ into bin/. vgpu-dra runs in an image holding nothing
# else (deploy/kubernetes/Dockerfile, FROM scratch), so it is built static,
# without cgo (it needs none).
GO_CMDS := $(filter-out ./cmd/vgpu-dra,$(patsubst %/main.go,./%,$(wildcard cmd/*/main.go)))
go:
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(GO_CMDS)
	CGO_ENABLED=0 $(GO) build -o $(BIN)/vgpu-dra ./cmd/vgpu-dra

# The vgpu-dra image: deploy/kubernetes/Dockerfile over bin/vgpu-dra, built with
# $(CONTAINER_TOOL) (FROM scratch: no registry is reached) and saved as an archive
# ($(BUILD)/vgpu-dra-image.tar; an OCI archive with podman) for `ctr images import`
# or `podman load`. Push $(DRA_IMAGE) to your registry, or name yours in
# deploy/kubernetes/daemonset.yaml. test/k8s deploys this image.
DRA_IMAGE ?= docker.io/vgpu/vgpu-dra:latest
CONTAINER_TOOL ?= podman
.PHONY: dra-image
dra-image: go
	@rm -rf $(BUILD)/dra-image && mkdir -p $(BUILD)/dra-image
	cp $(BIN)/vgpu-dra $(BUILD)/dra-image/
	$(CONTAINER_TOOL) build -q -f deploy/kubernetes/Dockerfile -t $(DRA_IMAGE) $(BUILD)/dra-image
	rm -f $(BUILD)/vgpu-dra-image.tar
	$(CONTAINER_TOOL) save $(if $(filter podman,$(notdir $(CONTAINER_TOOL))),--format oci-archive) \
		-o $(BUILD)/vgpu-dra-image.tar $(DRA_IMAGE)

# Debian 12 packages the tests need; installed only when missing.
DEB_PKGS := gcc make libc6-dev python3 containerd runc podman busybox-static containernetworking-plugins
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Debian 12's real python3-pycuda for test/clients (bookworm contrib, libcurand10
# from non-free; unpacked into build/clients/pycuda, its Python dependencies
# installed from main; no NVIDIA driver package installed).
.PHONY: pycuda-dep
pycuda-dep:
	sh test/clients/fetch_pycuda.sh $(BUILD)
test: pycuda-dep

# Debian 12's real nvtop for test/clients (bookworm contrib, unpacked into
# build/clients/nvtop; no NVIDIA package installed) and tmux, which drives it.
.PHONY: nvtop-dep
nvtop-dep:
	sh test/clients/fetch_nvtop.sh $(BUILD)
test: nvtop-dep

vet:
	$(GO) vet ./...

fmt-check:
	@bad=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$bad" ]; then echo "not gofmt-formatted:"; echo "$$bad"; exit 1; fi

# C formatting: .clang-format at the root, Debian 12's clang-format (14), installed
# when missing (as deps does). fmt-c rewrites; fmt-c-check lists what differs.
CLANG_FORMAT ?= clang-format
CFMT_DIRS  := libvgpu test/simgpu test/cprog test/gpu
CFMT_FILES  = $(shell find $(CFMT_DIRS) -name '*.[ch]' | LC_ALL=C sort)

clang-format-dep:
	@command -v $(CLANG_FORMAT) >/dev/null 2>&1 || { \
		echo "installing: clang-format"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install: clang-format" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang-format; }

fmt-c: clang-format-dep
	$(CLANG_FORMAT) -i --style=file $(CFMT_FILES)

fmt-c-check: clang-format-dep
	@bad=""; for f in $(CFMT_FILES); do \
		$(CLANG_FORMAT) --style=file "$$f" | cmp -s - "$$f" || bad="$$bad $$f"; \
	done; \
	if [ -n "$$bad" ]; then echo "not clang-format-formatted (run make fmt-c):"; \
		for f in $$bad; do echo "  $$f"; done; exit 1; fi

.PHONY: test-all test-unit test-race lint check-sizes check-imports generate bpf-deps

# The tracker's BPF programs (tracker/bpf/*.c) are compiled by bpf2go (go
# generate in tracker/) into tracker/tracker_bpfel.{go,o}, which are committed
# so that a build needs no clang. generate rebuilds them with Debian 12's
# clang-14 (the same compiler gives the same bytes) and fails when they differ
# from the committed ones: a changed program not regenerated, or another
# compiler. After changing tracker/bpf/, run it and commit what it wrote.
BPF_DEB_PKGS := clang-14 llvm-14 libbpf-dev linux-libc-dev
BPF_GENERATED := tracker/tracker_bpfel.go tracker/tracker_bpfel.o
bpf-deps:
	@missing=""; for p in $(BPF_DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root to install:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

generate: bpf-deps
	cd tracker && $(GO) generate ./...
	@if ! git diff --quiet -- $(BPF_GENERATED); then \
		echo "the generated BPF files differ from the committed ones (commit them if tracker/bpf/ changed):"; \
		git diff --stat -- $(BPF_GENERATED); exit 1; fi

# Go gates. lint: gofmt, go vet, golangci-lint (.golangci.yml: staticcheck,
# gosec, errorlint, gocritic, misspell, funlen, forbidigo), file sizes and the
# import rules. The linter is built once at a pinned version into build/tools.
GOLANGCI_LINT_VERSION := v2.15.0
LINT_BIN := $(BUILD)/tools/golangci-lint
# Product Go files stay under this many lines (generated code aside).
MAX_GO_FILE_LINES := 600
# Packages whose tests need neither built artifacts nor root: seconds.
UNIT_PKGS := ./shm/... ./internal/... ./daemon ./daemon/allocator ./daemon/api \
	./daemon/containers ./daemon/metrics ./daemon/store ./runtime-hook/... ./dra/... ./cmd/...
# Packages with goroutines (the daemon, its loop, the contract's concurrent
# users, the runtime's signal forwarding): run under the race detector.
RACE_PKGS := ./shm/... ./internal/... ./enforcer/... ./daemon/... ./runtime-hook/... ./cmd/vgpuctl/ \
	./tracker/... ./dra/...

$(LINT_BIN):
	@mkdir -p $(@D)
	@t0=$$(date +%s); echo "building golangci-lint $(GOLANGCI_LINT_VERSION) (once)"; \
	GOBIN=$(abspath $(@D)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION); \
	echo "golangci-lint built in $$(( $$(date +%s) - t0 ))s"

lint: fmt-check vet check-sizes check-imports $(LINT_BIN)
	$(LINT_BIN) run ./...

# No product Go file over MAX_GO_FILE_LINES lines (tests and test/ aside).
check-sizes:
	@bad=$$(for f in $$(git ls-files '*.go' | grep -v '_test\.go$$' | grep -v '^test/'); do \
		n=$$(wc -l < "$$f"); [ "$$n" -gt $(MAX_GO_FILE_LINES) ] && echo "  $$f: $$n lines"; done; true); \
	if [ -n "$$bad" ]; then echo "Go files over $(MAX_GO_FILE_LINES) lines:"; echo "$$bad"; exit 1; fi

# The import rules: the shared-memory contract (shm) imports nothing of ours,
# and product code never imports test code (only the simulator's own command,
# the benchmarks and tests may).
MODULE := github.com/vgpu-project/vgpu
check-imports:
	@bad=$$($(GO) list -f '{{join .Imports "\n"}}' ./shm/ | grep '^$(MODULE)/' ); \
	if [ -n "$$bad" ]; then echo "shm must import nothing of the project, imports: $$bad"; exit 1; fi
	@bad=$$($(GO) list -f '{{.ImportPath}} {{join .Imports " "}}' ./... | \
		grep -v '^$(MODULE)/\(test/\|bench\|cmd/vgpu-bench\|cmd/vgpu-sim\|internal/testproc\|internal/testbuild\)' | \
		grep ' $(MODULE)/test/' ); \
	if [ -n "$$bad" ]; then echo "product packages import test code:"; echo "$$bad"; exit 1; fi

test-unit:
	$(GO) test -count=1 $(UNIT_PKGS)

test-race:
	$(GO) test -count=1 -race -timeout 20m $(RACE_PKGS)

# Everything. Each part prints how long it took (CI runs on 2 cores).
test: deps
	@for step in build generate lint fmt-c-check test-race sanitize test-all test-k8s; do \
		t0=$$(date +%s); $(MAKE) --no-print-directory $$step || exit 1; \
		echo "== make $$step: $$(( $$(date +%s) - t0 ))s"; done

# test/k8s runs alone (test-k8s): it starts a whole cluster.
test-all:
	$(GO) test -count=1 -timeout 30m $$($(GO) list ./... | grep -v /test/k8s)

# The Kubernetes e2e (test/k8s/README.md): a single-node v1.34 cluster with
# containerd v1.7 (CDI) on a simulated GPU node, vgpud and vgpu-dra. The
# cluster's binaries are built once into a cache outside the checkout
# (VGPU_K8S_CACHE, default /var/cache/vgpu-k8s; ~12 min cold on 2 cores).
.PHONY: k8s-binaries test-k8s
k8s-binaries:
	GO="$(GO)" sh test/k8s/build.sh
test-k8s: k8s-binaries dra-image
	$(GO) test -count=1 -timeout 30m ./test/k8s/

# Sanitizer gate: libvgpu, the simulated driver (libcuda.so.1, libnvidia-ml.so.1),
# the test programs and libtestutil.a built with ASan + UBSan into build/san (the
# layout of build/), then the Go tests that run them, pointed there through
# VGPU_BUILD_DIR (internal/testbuild). Any finding fails the run: UBSan does not
# recover (-fno-sanitize-recover) and both stop at the first error.
#  - The test programs are sanitized too, so the ASan runtime is their first
#    DT_NEEDED. A program run with LD_PRELOAD=build/san/libvgpu.so still has the
#    preloaded library ahead of it in the link map, which ASan's start-up check
#    rejects; verify_asan_link_order=0 turns that check off. That is safe here:
#    libvgpu defines none of the functions ASan intercepts (malloc, free, str*,
#    ...), so every call still reaches ASan's interceptors first.
#  - Go test processes that dlopen the simulated NVML themselves (go-nvml in
#    test/simgpu) keep using build/ (testbuild says why): an instrumented library
#    cannot be loaded into a Go binary not linked with the sanitizer runtime, and
#    preloading libasan into the Go test binary would put ASan's shadow memory
#    where the Go heap wants to live. So sanitize builds build/ as well.
#  - Leak detection is off: the simulated driver never frees a destroyed graph,
#    stream or context (a stale handle must stay readable and test as dead, as
#    with the real driver), and test programs exit holding what the exit path
#    must return, or are SIGKILLed.
SAN_BUILD := $(BUILD)/san
SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
SAN_ENV   := ASAN_OPTIONS=halt_on_error=1:detect_leaks=0:verify_asan_link_order=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
sanitize: clib
	$(MAKE) --no-print-directory clib BUILD=$(SAN_BUILD) CSAN="$(SAN_FLAGS)"
	$(SAN_ENV) VGPU_BUILD_DIR=$(SAN_BUILD) $(GO) test -count=1 -timeout 20m ./test/integration/ ./test/simgpu/
	$(SAN_ENV) VGPU_BUILD_DIR=$(SAN_BUILD) $(GO) test -count=1 -timeout 10m -run Pycuda ./test/clients/

# Every benchmark through `vgpu-bench suite` (tracker only as root), then the plots
# (bench/results/plots) and bench/results/index.md + index.html. make bench BENCH_FLAGS=--quick
# is a short run (under 3 minutes); `vgpu-bench plot` redraws from existing reports.
BENCH_FLAGS ?=
bench: build
	$(BIN)/vgpu-bench suite --out bench/results $(BENCH_FLAGS)

clean:
	rm -rf $(BUILD) $(BIN)

# The demo: vgpud on the real GPUs (nvidia-smi -L lists any) or else on a simulated
# two-GPU node, a capped workload through `vgpuctl run`, then a clean stop.
run: build
	bash test/demo/run.sh
