/*
 * dlsym_handles — what dlsym returns for hooked and other names on each kind of
 * handle, with libvgpu preloaded. One line per lookup:
 *   "DLSYM handle=H name=N obj=O sym=S"   (obj "-" when the lookup failed)
 * H: libcuda (a dlopen'ed driver handle), nvml (dlopen'ed libnvidia-ml), default
 * (RTLD_DEFAULT), next (RTLD_NEXT from the program).
 */
#include "testutil.h"

static void look(const char *hname, void *h, const char *name)
{
    void *p = dlsym(h, name);
    Dl_info info;
    const char *obj = "-", *sym = "-";
    if (p && dladdr(p, &info)) {
        obj = info.dli_fname
                  ? strrchr(info.dli_fname, '/') ? strrchr(info.dli_fname, '/') + 1 : info.dli_fname
                  : "?";
        sym = info.dli_sname ? info.dli_sname : "?";
    }
    say("DLSYM handle=%s name=%s obj=%s sym=%s", hname, name, obj, sym);
}

int main(void)
{
    /* RTLD_GLOBAL: the driver joins the global scope, as when a program links it. */
    void *cu = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    void *nv = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (!cu || !nv)
        fail("dlopen: %s", dlerror());
    look("libcuda", cu, "cuMemAlloc_v2");
    look("libcuda", cu, "cuGetProcAddress_v2");
    look("libcuda", cu, "cuLaunchKernel_ptsz");
    look("libcuda", cu, "cuCtxSetCurrent"); /* not hooked */
    look("libcuda", cu, "cuCtxCreate_v4");  /* hooked, but this driver lacks it */
    look("libcuda", cu, "cuNoSuchFunction");
    look("nvml", nv, "nvmlDeviceGetMemoryInfo_v2");
    look("nvml", nv, "nvmlDeviceGetCount_v2"); /* not hooked */
    look("default", RTLD_DEFAULT, "cuMemAlloc_v2");
    look("default", RTLD_DEFAULT, "cuCtxSetCurrent");
    look("next", RTLD_NEXT, "cuMemFree_v2");
    look("next", RTLD_NEXT, "cuStreamSynchronize");
    return 0;
}
