/*
 * vmm_escape — VMM handles released while still mapped (test/integration/vmm_test.go).
 *
 * The driver frees a cuMemCreate handle's memory only once the handle is released
 * AND every mapping of it is unmapped; these scenarios hold memory through
 * mappings of released handles, and release/unmap in every order, printing a
 * phase at each point where the test compares libvgpu's charge with the driver's
 * figure. Entry points come through --path (as in the alloc workload).
 *
 *   escape         loop: create CHUNK -> reserve VA -> map -> release (the mapping
 *                  kept) until an error; "HELD n=N" + phase "held" after each
 *                  round, "RESULT ..." + phase "full" at the end; then every
 *                  mapping unmapped one by one (phase "unmapped"), the context
 *                  released (phase "released"). --exit-holding: exit at "full".
 *   unmap_release  map; phases mapped, unmapped (handle still live), released
 *   release_unmap  map, release; phases released (still mapped), unmapped
 *   twice          one handle mapped at two VA ranges, released; phases released,
 *                  one (first range unmapped), both
 *   span           three handles mapped end to end in one reservation, two of them
 *                  released (phase released); ONE cuMemUnmap over all three (phase
 *                  unmapped: the live one stays charged); the last released (phase
 *                  done)
 *   gap            as span, with the three mappings at slots 0, 2 and 3 of a
 *                  four-chunk reservation: the cuMemUnmap covers a hole
 *   ctx            a second context made current, a handle created, mapped,
 *                  released in it (phase held); the context destroyed (phase
 *                  ctx_destroyed); the primary context released (phase
 *                  primary_released); the mapping unmapped (phase unmapped)
 * Every scenario starts with the primary context retained (phase ready) and ends
 * with phase "end" (context released unless the scenario did it).
 */
#include "testutil.h"

static struct cuapi A;
static int step;
static size_t chunk = 64 * MiB;

static CUresult create(CUmemGenericAllocationHandle *h, size_t size)
{
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = 0;
    return A.create(h, size, &prop, 0);
}

static CUdeviceptr reserve(size_t size)
{
    CUdeviceptr va = 0;
    CHECK(A.reserve(&va, size, 0, 0, 0));
    return va;
}

/* Maps [va, va+size) to the handle at offset and grants access, as allocators do. */
static void map(CUdeviceptr va, size_t size, size_t offset, CUmemGenericAllocationHandle h)
{
    CHECK(A.map(va, size, offset, h, 0));
    CUmemAccessDesc acc = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, 0},
                           .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(A.set_access(va, size, &acc, 1));
}

/* Phase: stop here (with --step) so the test can look. */
static void at(const char *name)
{
    if (!phase(step, name))
        exit(0);
}

static void escape(int exit_holding)
{
    size_t cap = 4096, n = 0;
    CUdeviceptr *va = calloc(cap, sizeof *va);
    if (!va)
        fail("calloc");
    CUresult r = CUDA_SUCCESS;
    while (n < cap) {
        CUmemGenericAllocationHandle h;
        r = create(&h, chunk);
        if (r != CUDA_SUCCESS)
            break;
        va[n] = reserve(chunk);
        map(va[n], chunk, 0, h);
        CHECK(A.mrelease(h)); /* the mapping keeps the memory */
        n++;
        say("HELD n=%zu bytes=%llu", n, (unsigned long long)(n * chunk));
        at("held");
    }
    say("RESULT admitted=%llu count=%zu err=%d name=%s", (unsigned long long)(n * chunk), n, (int)r,
        cu_name(r));
    at("full");
    if (exit_holding)
        exit(0); /* the exit path must return everything */
    for (size_t i = 0; i < n; i++) {
        CHECK(A.unmap(va[i], chunk));
        CHECK(A.addr_free(va[i], chunk));
    }
    at("unmapped");
    free(va);
}

static void unmap_release(void)
{
    CUmemGenericAllocationHandle h;
    CHECK(create(&h, chunk));
    CUdeviceptr va = reserve(chunk);
    map(va, chunk, 0, h);
    at("mapped");
    CHECK(A.unmap(va, chunk));
    at("unmapped"); /* not released yet: still charged */
    CHECK(A.mrelease(h));
    at("released");
    CHECK(A.addr_free(va, chunk));
}

static void release_unmap(void)
{
    CUmemGenericAllocationHandle h;
    CHECK(create(&h, chunk));
    CUdeviceptr va = reserve(chunk);
    map(va, chunk, 0, h);
    CHECK(A.mrelease(h));
    at("released"); /* still mapped: still charged */
    CHECK(A.unmap(va, chunk));
    at("unmapped");
    CHECK(A.addr_free(va, chunk));
}

static void twice(void)
{
    CUmemGenericAllocationHandle h;
    CHECK(create(&h, chunk));
    CUdeviceptr v1 = reserve(chunk), v2 = reserve(chunk);
    map(v1, chunk, 0, h);
    map(v2, chunk, 0, h);
    CHECK(A.mrelease(h));
    at("released");
    CHECK(A.unmap(v1, chunk));
    at("one"); /* the second mapping still holds it */
    CHECK(A.unmap(v2, chunk));
    at("both");
    CHECK(A.addr_free(v1, chunk));
    CHECK(A.addr_free(v2, chunk));
}

/* Three handles mapped at the given chunk slots of one reservation of `slots`
 * chunks; handles 0 and 1 released, handle 2 live; one cuMemUnmap over all. */
static void span(const int slot[3], int slots)
{
    CUmemGenericAllocationHandle h[3];
    CUdeviceptr base = reserve((size_t)slots * chunk);
    for (int i = 0; i < 3; i++) {
        CHECK(create(&h[i], chunk));
        map(base + (size_t)slot[i] * chunk, chunk, 0, h[i]);
    }
    CHECK(A.mrelease(h[0]));
    CHECK(A.mrelease(h[1]));
    at("released");
    CHECK(A.unmap(base, (size_t)slots * chunk));
    at("unmapped"); /* h[2] is not released: still charged */
    CHECK(A.mrelease(h[2]));
    at("done");
    CHECK(A.addr_free(base, (size_t)slots * chunk));
}

static void ctx_scenario(void)
{
    CUcontext c2 = NULL;
    if (A.ctx_create3)
        CHECK(A.ctx_create3(&c2, NULL, 0, 0, 0));
    else
        CHECK(A.ctx_create(&c2, 0, 0));
    CUmemGenericAllocationHandle h;
    CHECK(create(&h, chunk));
    CUdeviceptr va = reserve(chunk);
    map(va, chunk, 0, h);
    CHECK(A.mrelease(h));
    at("held");
    CHECK(A.ctx_destroy(c2)); /* VMM handles are not the context's */
    at("ctx_destroyed");
    CHECK(A.release(0)); /* the primary's last reference: destroyed too */
    at("primary_released");
    CHECK(A.unmap(va, chunk));
    at("unmapped");
    CHECK(A.addr_free(va, chunk));
}

int main(int argc, char **argv)
{
    const char *path = "linked", *scenario = NULL;
    int exit_holding = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        // clang-format off: one option per line
        if (!strcmp(a, "--path") && v) {
            path = v;
            i++;
        } else if (!strcmp(a, "--scenario") && v) {
            scenario = v;
            i++;
        } else if (!strcmp(a, "--chunk") && v) {
            chunk = parse_size(v);
            i++;
        } else if (!strcmp(a, "--step"))
            step = 1;
        else if (!strcmp(a, "--exit-holding"))
            exit_holding = 1;
        else
            scenario = NULL, i = argc;
        // clang-format on
    }
    if (!scenario) {
        fprintf(stderr,
                "usage: %s [--path P] --scenario escape|unmap_release|release_unmap|"
                "twice|span|gap|ctx [--chunk SIZE] [--step] [--exit-holding]\n",
                argv[0]);
        return 2;
    }
    resolve_api(&A, path, 0, resolve_linked);
    report_hooks(&A);
    CHECK(A.init(0));
    CUcontext primary;
    CHECK(A.retain(&primary, 0));
    CHECK(A.set_current(primary));
    at("ready");

    int released = 0;
    if (!strcmp(scenario, "escape")) {
        escape(exit_holding);
    } else if (!strcmp(scenario, "unmap_release")) {
        unmap_release();
    } else if (!strcmp(scenario, "release_unmap")) {
        release_unmap();
    } else if (!strcmp(scenario, "twice")) {
        twice();
    } else if (!strcmp(scenario, "span")) {
        span((const int[3]){0, 1, 2}, 3);
    } else if (!strcmp(scenario, "gap")) {
        span((const int[3]){0, 2, 3}, 4);
    } else if (!strcmp(scenario, "ctx")) {
        ctx_scenario();
        released = 1;
    } else {
        fail("unknown --scenario %s", scenario);
    }
    if (!released)
        CHECK(A.release(0));
    at("end");
    return 0;
}
