/*
 * sim_api — single-process semantics of the simulated driver API.
 *
 * Run on a fresh node (nothing else using device 0). Checks error codes before and
 * after cuInit, device queries, context rules, and the bookkeeping of every
 * allocation path: each charge and credit is observed through cuMemGetInfo_v2, which
 * reports the whole device. Prints "OK" at the end.
 */
#include <pthread.h>
#include <unistd.h>

#include "sim_util.h"

static size_t dev_free(void)
{
    size_t f = 0, t = 0;
    CHECK(cuMemGetInfo_v2(&f, &t));
    return f;
}

static void *thread_no_ctx(void *arg)
{
    (void)arg;
    /* The current context is per thread: a new thread has none. */
    CUcontext c = (CUcontext)0x1;
    CHECK(cuCtxGetCurrent(&c));
    EXPECT(c == NULL, "new thread has a current context %p", (void *)c);
    CUdeviceptr p;
    EXPECT_RES(cuMemAlloc_v2(&p, 1024), CUDA_ERROR_INVALID_CONTEXT);
    return NULL;
}

int main(void)
{
    /* ---- before cuInit */
    CUdeviceptr p = 0;
    int n = 0;
    EXPECT_RES(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
    EXPECT_RES(cuMemAlloc_v2(&p, 1), CUDA_ERROR_NOT_INITIALIZED);
    int ver = 0;
    CHECK(cuDriverGetVersion(&ver)); /* allowed before cuInit */
    EXPECT(ver == 12040, "driver version %d", ver);
    EXPECT_RES(cuDriverGetVersion(NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuInit(1), CUDA_ERROR_INVALID_VALUE);

    CHECK(cuInit(0));
    CHECK(cuInit(0)); /* idempotent */

    /* ---- devices */
    EXPECT_RES(cuDeviceGetCount(NULL), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuDeviceGetCount(&n));
    EXPECT(n >= 1, "device count %d", n);
    CUdevice d;
    EXPECT_RES(cuDeviceGet(&d, n), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RES(cuDeviceGet(&d, -1), CUDA_ERROR_INVALID_DEVICE);
    EXPECT_RES(cuDeviceGet(NULL, 0), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuDeviceGet(&d, 0));
    char name[128];
    CHECK(cuDeviceGetName(name, sizeof name, d));
    EXPECT(strstr(name, "simulated") != NULL, "name %s", name);
    EXPECT_RES(cuDeviceGetName(NULL, 10, d), CUDA_ERROR_INVALID_VALUE);
    char shortname[5];
    CHECK(cuDeviceGetName(shortname, sizeof shortname, d)); /* truncated, terminated */
    EXPECT(strlen(shortname) == 4, "truncated name %s", shortname);
    CUuuid u1, u2;
    CHECK(cuDeviceGetUuid(&u1, d));
    CHECK(cuDeviceGetUuid_v2(&u2, d));
    EXPECT(memcmp(&u1, &u2, sizeof u1) == 0, "uuid v1 != v2");
    EXPECT_RES(cuDeviceGetUuid(NULL, d), CUDA_ERROR_INVALID_VALUE);
    int sms = 0, major = 0, minor = -1;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d));
    CHECK(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, d));
    CHECK(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, d));
    EXPECT(sms >= 1 && major == 9 && minor == 0, "sms %d cc %d.%d", sms, major, minor);
    EXPECT_RES(cuDeviceGetAttribute(&sms, (CUdevice_attribute)100000, d), CUDA_ERROR_INVALID_VALUE);
    size_t total = 0;
    CHECK(cuDeviceTotalMem_v2(&total, d));
    EXPECT(total > 0, "total 0");
    char bus[32];
    CHECK(cuDeviceGetPCIBusId(bus, sizeof bus, d));
    EXPECT(strlen(bus) == 12 && bus[4] == ':', "pci bus id %s", bus);

    /* ---- contexts */
    size_t f = 0, t = 0;
    EXPECT_RES(cuMemGetInfo_v2(&f, &t), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuMemAlloc_v2(&p, 1024), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuCtxSynchronize(), CUDA_ERROR_INVALID_CONTEXT);
    CUdevice cd;
    EXPECT_RES(cuCtxGetDevice(&cd), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuCtxCreate_v2(NULL, 0, d), CUDA_ERROR_INVALID_VALUE);
    CUcontext ctx;
    EXPECT_RES(cuCtxCreate_v2(&ctx, 0, n), CUDA_ERROR_INVALID_DEVICE);

    /* Primary context: the first retain charges the footprint, the last release returns it. */
    CUcontext prim, prim2;
    CHECK(cuDevicePrimaryCtxRetain(&prim, d));
    CHECK(cuCtxSetCurrent(prim));
    size_t free0 = dev_free();
    size_t ctxmem = total - free0; /* fresh node: only our primary context */
    CHECK(cuDevicePrimaryCtxRetain(&prim2, d));
    EXPECT(prim == prim2, "primary context handle changed");
    EXPECT(dev_free() == free0, "second retain charged again");
    CHECK(cuDevicePrimaryCtxRelease_v2(d));
    EXPECT(dev_free() == free0, "release of one of two refs credited");

    /* A created context is current right away and charges its own footprint. */
    CHECK(cuCtxCreate_v2(&ctx, 0, d));
    CUcontext cur;
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx, "created context is not current");
    EXPECT(dev_free() == free0 - ctxmem, "created context charged %zu, want %zu",
           free0 - dev_free(), ctxmem);
    CHECK(cuCtxGetDevice(&cd));
    EXPECT(cd == d, "ctx device %d", cd);
    CHECK(cuMemAlloc_v2(&p, 3 * MiB)); /* freed with its context */
    CHECK(cuCtxDestroy_v2(ctx));
    EXPECT(dev_free() == free0, "destroying a context did not return its footprint and memory");
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == prim, "destroy did not pop the context (current %p)", (void *)cur);
    EXPECT_RES(cuCtxDestroy_v2(ctx), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuCtxPushCurrent_v2(ctx), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuCtxDestroy_v2(prim),
               CUDA_ERROR_INVALID_CONTEXT); /* primary: release, not destroy */

    /* cuCtxAttach / cuCtxDetach: a usage count; the last detach destroys. */
    CHECK(cuCtxCreate_v2(&ctx, 0, d));
    CUcontext att;
    EXPECT_RES(cuCtxAttach(&att, 1), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuCtxAttach(&att, 0));
    EXPECT(att == ctx, "attach returned %p, not the current %p", (void *)att, (void *)ctx);
    CHECK(cuMemAlloc_v2(&p, 3 * MiB));
    CHECK(cuCtxDetach(ctx));
    EXPECT(dev_free() == free0 - ctxmem - 3 * MiB, "detach with a usage left freed something");
    CHECK(cuCtxDetach(ctx));
    EXPECT(dev_free() == free0, "last detach did not destroy the context");
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == prim, "last detach did not pop the context");
    EXPECT_RES(cuCtxDetach(ctx), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_RES(cuCtxAttach(&att, 0), CUDA_ERROR_INVALID_CONTEXT); /* primary current */

    CHECK(cuCtxPushCurrent_v2(prim));
    CUcontext popped;
    CHECK(cuCtxPopCurrent_v2(&popped));
    EXPECT(popped == prim, "pop returned %p", (void *)popped);

    pthread_t th;
    pthread_create(&th, NULL, thread_no_ctx, NULL);
    pthread_join(th, NULL);

    /* ---- cuMemAlloc / cuMemFree / ranges */
    EXPECT_RES(cuMemAlloc_v2(NULL, 1024), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuMemAlloc_v2(&p, 0), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuMemGetInfo_v2(NULL, &t), CUDA_ERROR_INVALID_VALUE);
    CUdeviceptr a, b;
    CHECK(cuMemAlloc_v2(&a, 1000));
    CHECK(cuMemAlloc_v2(&b, 5 * MiB));
    EXPECT(a != 0 && b != 0 && a != b, "pointers %llx %llx", a, b);
    EXPECT(a % 512 == 0 && b % (2 * MiB) == 0, "alignment %llx %llx", a, b);
    EXPECT(dev_free() == free0 - 1000 - 5 * MiB, "alloc charged %zu", free0 - dev_free());
    CUdeviceptr base;
    size_t sz;
    CHECK(cuMemGetAddressRange_v2(&base, &sz, b + 12345));
    EXPECT(base == b && sz == 5 * MiB, "range %llx %zu", base, sz);
    EXPECT_RES(cuMemGetAddressRange_v2(&base, &sz, 0x42), CUDA_ERROR_NOT_FOUND);
    EXPECT_RES(cuMemFree_v2(b + 1), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuMemFree_v2(0xdead0000ull), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemFree_v2(a));
    CHECK(cuMemFree_v2(b));
    EXPECT_RES(cuMemFree_v2(b), CUDA_ERROR_INVALID_VALUE); /* double free */
    EXPECT(dev_free() == free0, "free did not credit");

    /* ---- pitch, managed, arrays */
    size_t pitch = 0;
    EXPECT_RES(cuMemAllocPitch_v2(&p, &pitch, 1000, 10, 3), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemAllocPitch_v2(&p, &pitch, 1000, 10, 4));
    EXPECT(pitch == 1024, "pitch %zu", pitch);
    EXPECT(dev_free() == free0 - 1024 * 10, "pitch charged %zu", free0 - dev_free());
    CHECK(cuMemFree_v2(p));
    EXPECT_RES(cuMemAllocManaged(&p, 4096, 0), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemAllocManaged(&p, 4096, CU_MEM_ATTACH_GLOBAL));
    EXPECT(dev_free() == free0 - 4096, "managed charged %zu", free0 - dev_free());
    CHECK(cuMemFree_v2(p));
    CUDA_ARRAY_DESCRIPTOR ad = {
        .Width = 100, .Height = 0, .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUarray arr;
    CHECK(cuArrayCreate_v2(&arr, &ad));
    EXPECT(dev_free() == free0 - 2048, "1D array charged %zu",
           free0 - dev_free()); /* roundup(1600,512) */
    CHECK(cuArrayDestroy(arr));
    ad.Height = 3;
    ad.NumChannels = 3;
    EXPECT_RES(cuArrayCreate_v2(&arr, &ad), CUDA_ERROR_INVALID_VALUE);
    ad.NumChannels = 1;
    ad.Format = CU_AD_FORMAT_HALF;
    CHECK(cuArrayCreate_v2(&arr, &ad));
    EXPECT(dev_free() == free0 - 512 * 3, "2D array charged %zu", free0 - dev_free());
    CHECK(cuArrayDestroy(arr));
    EXPECT_RES(cuArrayDestroy(arr), CUDA_ERROR_INVALID_HANDLE);
    EXPECT(dev_free() == free0, "arrays not credited");

    /* 3D, layered and cubemap arrays: rows x max(H,1) x max(D,1). */
    CUDA_ARRAY3D_DESCRIPTOR a3 = {
        .Width = 100, .Height = 3, .Depth = 5, .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CHECK(cuArray3DCreate_v2(&arr, &a3));
    EXPECT(dev_free() == free0 - 2048 * 3 * 5, "3D array charged %zu", free0 - dev_free());
    EXPECT_RES(cuMemFree_v2((CUdeviceptr)(uintptr_t)arr), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuArrayDestroy(arr));
    a3.Height = 0; /* 3D without a height */
    EXPECT_RES(cuArray3DCreate_v2(&arr, &a3), CUDA_ERROR_INVALID_VALUE);
    a3.Flags = CUDA_ARRAY3D_LAYERED; /* 1D layered: 5 layers */
    CHECK(cuArray3DCreate_v2(&arr, &a3));
    EXPECT(dev_free() == free0 - 2048 * 5, "layered array charged %zu", free0 - dev_free());
    CHECK(cuArrayDestroy(arr));
    a3.Flags = CUDA_ARRAY3D_CUBEMAP;
    a3.Height = 100;
    EXPECT_RES(cuArray3DCreate_v2(&arr, &a3), CUDA_ERROR_INVALID_VALUE); /* depth 5 */
    a3.Depth = 6;
    CHECK(cuArray3DCreate_v2(&arr, &a3));
    EXPECT(dev_free() == free0 - 2048 * 100 * 6, "cubemap charged %zu", free0 - dev_free());
    CHECK(cuArrayDestroy(arr));
    EXPECT(dev_free() == free0, "3D arrays not credited");

    /* Mipmapped: the sum of the levels (3D: every dimension halves; layered: not
     * the layers), each row at least 512 bytes. */
    CUDA_ARRAY3D_DESCRIPTOR md = {
        .Width = 256, .Height = 64, .Depth = 8, .Format = CU_AD_FORMAT_FLOAT, .NumChannels = 4};
    CUmipmappedArray mm;
    EXPECT_RES(cuMipmappedArrayCreate(&mm, &md, 10), CUDA_ERROR_INVALID_VALUE); /* > 9 levels */
    CHECK(cuMipmappedArrayCreate(&mm, &md, 3));
    size_t mwant = 4096 * 64 * 8 + 2048 * 32 * 4 + 1024 * 16 * 2;
    EXPECT(dev_free() == free0 - mwant, "mipmap charged %zu, want %zu", free0 - dev_free(), mwant);
    EXPECT_RES(cuArrayDestroy((CUarray)mm), CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuMipmappedArrayDestroy(mm));
    EXPECT_RES(cuMipmappedArrayDestroy(mm), CUDA_ERROR_INVALID_HANDLE);
    md.Flags = CUDA_ARRAY3D_LAYERED;
    CHECK(cuMipmappedArrayCreate(&mm, &md, 9));
    mwant = 8 * (4096 * 64 + 2048 * 32 + 1024 * 16 + 512 * 8 + 512 * 4 + 512 * 2 + 512 + 512 + 512);
    EXPECT(dev_free() == free0 - mwant, "layered mipmap charged %zu, want %zu", free0 - dev_free(),
           mwant);
    CHECK(cuMipmappedArrayDestroy(mm));
    EXPECT(dev_free() == free0, "mipmaps not credited");

    /* ---- VMM */
    CUmemAllocationProp prop;
    memset(&prop, 0, sizeof prop);
    prop.type = CU_MEM_ALLOCATION_TYPE_PINNED;
    prop.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    prop.location.id = d;
    size_t gran = 0;
    CHECK(cuMemGetAllocationGranularity(&gran, &prop, 0));
    EXPECT(gran == 2 * MiB, "granularity %zu", gran);
    CUmemGenericAllocationHandle h;
    EXPECT_RES(cuMemCreate(&h, 3 * MiB, &prop, 0), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemCreate(&h, 8 * MiB, &prop, 0));
    EXPECT(dev_free() == free0 - 8 * MiB, "cuMemCreate charged %zu", free0 - dev_free());
    CUdeviceptr va;
    CHECK(cuMemAddressReserve(&va, 16 * MiB, 0, 0, 0));
    EXPECT(dev_free() == free0 - 8 * MiB, "reserve charged memory");
    EXPECT_RES(cuMemMap(va, 16 * MiB, 0, h, 0),
               CUDA_ERROR_INVALID_VALUE); /* larger than the handle */
    CHECK(cuMemMap(va, 8 * MiB, 0, h, 0));
    EXPECT_RES(cuMemMap(va, 2 * MiB, 0, h, 0), CUDA_ERROR_INVALID_VALUE); /* already mapped */
    CUmemAccessDesc acc = {.location = {CU_MEM_LOCATION_TYPE_DEVICE, d},
                           .flags = CU_MEM_ACCESS_FLAGS_PROT_READWRITE};
    CHECK(cuMemSetAccess(va, 8 * MiB, &acc, 1));
    EXPECT_RES(cuMemSetAccess(va, 16 * MiB, &acc, 1), CUDA_ERROR_INVALID_VALUE); /* half unmapped */
    CHECK(cuMemRelease(h)); /* still mapped: stays charged */
    EXPECT(dev_free() == free0 - 8 * MiB, "release while mapped credited early");
    CHECK(cuMemUnmap(va, 8 * MiB));
    EXPECT(dev_free() == free0, "unmap after release did not credit");
    EXPECT_RES(cuMemUnmap(va, 8 * MiB), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuMemAddressFree(va, 16 * MiB));
    EXPECT_RES(cuMemRelease(h), CUDA_ERROR_INVALID_VALUE);

    /* ---- stream-ordered allocator */
    CUstream s;
    CHECK(cuStreamCreate(&s, 0));
    CUmemoryPool defpool, curpool;
    CHECK(cuDeviceGetDefaultMemPool(&defpool, d));
    CHECK(cuDeviceGetMemPool(&curpool, d));
    EXPECT(defpool == curpool, "current pool is not the default");
    cuuint64_t v = 0;
    CHECK(cuMemPoolGetAttribute(defpool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &v));
    EXPECT(v == 0, "default threshold %llu", v);
    CUdeviceptr q1, q2;
    CHECK(cuMemAllocAsync(&q1, 10 * MiB, s));
    EXPECT(dev_free() == free0 - 10 * MiB, "async alloc charged %zu", free0 - dev_free());
    CHECK(cuMemFreeAsync(q1, s));
    EXPECT(dev_free() == free0 - 10 * MiB, "freed pool memory left the reservation before sync");
    CHECK(cuMemAllocAsync(&q2, 4 * MiB, s)); /* reuses the reservation */
    EXPECT(dev_free() == free0 - 10 * MiB, "reuse grew the reservation");
    CHECK(cuMemPoolGetAttribute(defpool, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &v));
    EXPECT(v == 4 * MiB, "used %llu", v);
    CHECK(cuStreamSynchronize(s)); /* trims to max(used, threshold 0) */
    EXPECT(dev_free() == free0 - 4 * MiB, "sync trimmed to %zu", free0 - dev_free());
    CHECK(cuMemPoolGetAttribute(defpool, CU_MEMPOOL_ATTR_RESERVED_MEM_HIGH, &v));
    EXPECT(v == 10 * MiB, "reserved high %llu", v);
    CHECK(cuMemFreeAsync(q2, s));
    EXPECT_RES(cuMemFreeAsync(q2, s), CUDA_ERROR_INVALID_VALUE);
    cuuint64_t thr = 64 * MiB;
    CHECK(cuMemPoolSetAttribute(defpool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &thr));
    CHECK(cuStreamSynchronize(s)); /* 4 MiB reserved < threshold: kept */
    EXPECT(dev_free() == free0 - 4 * MiB, "trimmed below the threshold");
    CHECK(cuMemPoolTrimTo(defpool, 0));
    EXPECT(dev_free() == free0, "TrimTo(0) left %zu", free0 - dev_free());

    CUmemPoolProps pp;
    memset(&pp, 0, sizeof pp);
    pp.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    pp.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    pp.location.id = d;
    CUmemoryPool mine;
    CHECK(cuMemPoolCreate(&mine, &pp));
    CHECK(cuMemAllocFromPoolAsync(&q1, 6 * MiB, mine, s));
    EXPECT(dev_free() == free0 - 6 * MiB, "pool alloc charged %zu", free0 - dev_free());
    CHECK(cuDeviceSetMemPool(d, mine));
    CHECK(cuMemAllocAsync(&q2, 2 * MiB, s));
    EXPECT(dev_free() == free0 - 8 * MiB, "current-pool alloc charged %zu", free0 - dev_free());
    CHECK(cuMemFreeAsync(q1, s));
    CHECK(cuMemFreeAsync(q2, s));
    CHECK(cuCtxSynchronize());
    EXPECT(dev_free() == free0, "ctx sync did not trim the pool");
    CHECK(cuMemPoolDestroy(mine));
    EXPECT_RES(cuMemPoolDestroy(defpool), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuDeviceGetMemPool(&curpool, d));
    EXPECT(curpool == defpool, "destroyed pool still current");

    /* ---- graph memory: taken at the first launch, kept until the exec is destroyed
     * or trimmed while idle, taken again by the next launch */
    CUgraph gg;
    CHECK(cuGraphCreate(&gg, 0));
    CUDA_MEM_ALLOC_NODE_PARAMS gp;
    memset(&gp, 0, sizeof gp);
    gp.poolProps.allocType = CU_MEM_ALLOCATION_TYPE_PINNED;
    gp.poolProps.location.type = CU_MEM_LOCATION_TYPE_DEVICE;
    gp.poolProps.location.id = d;
    gp.bytesize = 12 * MiB;
    CUgraphNode ga, gf;
    CHECK(cuGraphAddMemAllocNode(&ga, gg, NULL, 0, &gp));
    EXPECT(gp.dptr != 0, "no address for the allocation node");
    EXPECT_RES(cuGraphAddMemFreeNode(&gf, gg, &ga, 1, gp.dptr + 512), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuGraphAddMemFreeNode(&gf, gg, &ga, 1, gp.dptr));
    EXPECT_RES(cuGraphAddMemFreeNode(&gf, gg, &ga, 1, gp.dptr), CUDA_ERROR_INVALID_VALUE);
    int gt = -1;
    CHECK(cuGraphNodeGetType(ga, &gt));
    EXPECT(gt == CU_GRAPH_NODE_TYPE_MEM_ALLOC, "alloc node type %d", gt);
    CHECK(cuGraphNodeGetType(gf, &gt));
    EXPECT(gt == CU_GRAPH_NODE_TYPE_MEM_FREE, "free node type %d", gt);
    CUDA_MEM_ALLOC_NODE_PARAMS gq;
    CHECK(cuGraphMemAllocNodeGetParams(ga, &gq));
    EXPECT(gq.bytesize == 12 * MiB && gq.dptr == gp.dptr && gq.poolProps.location.id == d,
           "alloc node params %zu %llx", gq.bytesize, gq.dptr);
    EXPECT_RES(cuGraphMemAllocNodeGetParams(gf, &gq), CUDA_ERROR_INVALID_VALUE);
    CUgraphExec ge;
    CHECK(cuGraphInstantiateWithFlags(&ge, gg, 0));
    EXPECT(dev_free() == free0, "instantiation took graph memory");
    CUstream gs;
    CHECK(cuStreamCreate(&gs, 0));
    CHECK(cuGraphLaunch(ge, gs));
    EXPECT(dev_free() == free0 - 12 * MiB, "first launch took %zu", free0 - dev_free());
    CHECK(cuGraphLaunch(ge, gs));
    EXPECT(dev_free() == free0 - 12 * MiB, "second launch took more: %zu", free0 - dev_free());
    EXPECT_RES(cuMemFree_v2(gp.dptr), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuStreamSynchronize(gs));
    CHECK(cuDeviceGraphMemTrim(d));
    EXPECT(dev_free() == free0, "trim of an idle graph left %zu", free0 - dev_free());
    CHECK(cuGraphLaunch(ge, gs));
    EXPECT(dev_free() == free0 - 12 * MiB, "launch after trim took %zu", free0 - dev_free());
    CHECK(cuGraphExecDestroy(ge));
    EXPECT(dev_free() == free0, "exec destroy left %zu", free0 - dev_free());
    CHECK(cuGraphDestroy(gg));
    CHECK(cuStreamSynchronize(gs));

    /* ---- modules and launches (argument checks; timing is sim_launch's job) */
    CUmodule mod;
    CUfunction fn;
    EXPECT_RES(cuModuleLoadData(&mod, NULL), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuModuleLoadData(&mod, ".version 8.0"));
    CHECK(cuModuleGetFunction(&fn, mod, "anything"));
    EXPECT_RES(cuLaunchKernel(fn, 0, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuLaunchKernel(fn, 1, 1, 1, 1025, 1, 1, 0, NULL, NULL, NULL),
               CUDA_ERROR_INVALID_VALUE);
    EXPECT_RES(cuLaunchKernel(NULL, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL),
               CUDA_ERROR_INVALID_HANDLE);
    CHECK(cuLaunchKernel(fn, 1, 1, 1, 32, 1, 1, 0, s, NULL, NULL));
    EXPECT_RES(cuLaunchCooperativeKernel(fn, 1u << 30, 1, 1, 32, 1, 1, 0, s, NULL),
               CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
    EXPECT_RES(cuFuncSetBlockShape(fn, 2048, 1, 1), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuFuncSetBlockShape(fn, 64, 1, 1));
    CHECK(cuLaunch(fn));
    EXPECT_RES(cuLaunchGrid(fn, 0, 1), CUDA_ERROR_INVALID_VALUE);
    CHECK(cuLaunchGrid(fn, 4, 2));
    CHECK(cuLaunchGridAsync(fn, 4, 2, s));
    CUDA_LAUNCH_PARAMS lp = {.function = fn,
                             .gridDimX = 2,
                             .gridDimY = 1,
                             .gridDimZ = 1,
                             .blockDimX = 32,
                             .blockDimY = 1,
                             .blockDimZ = 1,
                             .hStream = NULL};
    EXPECT_RES(cuLaunchCooperativeKernelMultiDevice(&lp, 1, 0), CUDA_ERROR_INVALID_VALUE);
    lp.hStream = s;
    CHECK(cuLaunchCooperativeKernelMultiDevice(&lp, 1, 0));
    CUDA_LAUNCH_PARAMS two[2] = {lp, lp}; /* both on device d */
    EXPECT_RES(cuLaunchCooperativeKernelMultiDevice(two, 2, 0), CUDA_ERROR_INVALID_DEVICE);
    CHECK(cuStreamDestroy_v2(s));
    EXPECT_RES(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);

    /* ---- errors */
    const char *str = NULL;
    CHECK(cuGetErrorName(CUDA_ERROR_OUT_OF_MEMORY, &str));
    EXPECT(strcmp(str, "CUDA_ERROR_OUT_OF_MEMORY") == 0, "name %s", str);
    CHECK(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &str));
    EXPECT(strcmp(str, "out of memory") == 0, "string %s", str);
    EXPECT_RES(cuGetErrorString((CUresult)12345, &str), CUDA_ERROR_INVALID_VALUE);

    /* ---- OOM at the device total: allocate 64 MiB chunks until the device is full */
    size_t before = dev_free();
    CUdeviceptr chunks[4096];
    int k = 0;
    CUresult r;
    while (k < 4096 && (r = cuMemAlloc_v2(&chunks[k], 64 * MiB)) == CUDA_SUCCESS)
        k++;
    EXPECT(k < 4096, "never ran out of memory");
    EXPECT_RES(r, CUDA_ERROR_OUT_OF_MEMORY);
    EXPECT((size_t)k * 64 * MiB <= before && before - (size_t)k * 64 * MiB < 64 * MiB,
           "admitted %d chunks with %zu free", k, before);
    EXPECT(dev_free() == before - (size_t)k * 64 * MiB, "free after fill %zu", dev_free());
    CUcontext extra;
    EXPECT_RES(cuCtxCreate_v2(&extra, 0, d),
               before - (size_t)k * 64 * MiB < ctxmem ? CUDA_ERROR_OUT_OF_MEMORY : CUDA_SUCCESS);
    CHECK(cuCtxSetCurrent(prim));
    for (int i = 0; i < k; i++)
        CHECK(cuMemFree_v2(chunks[i]));
    EXPECT(dev_free() == free0, "after freeing everything %zu in use", free0 - dev_free());

    CHECK(cuDevicePrimaryCtxRelease_v2(d));
    EXPECT_RES(cuDevicePrimaryCtxRelease_v2(d), CUDA_ERROR_INVALID_CONTEXT);
    printf("OK\n");
    return 0;
}
