/*
 * modules.c — the module registry: the modules whose lifecycle handlers init.c
 * runs (struct vgpu_module in vgpu_internal.h says why it is a constant list).
 *
 * Order: init and fork_child run top to bottom, fork_prepare bottom to top. The
 * handlers are independent of each other today (each resets only its own state);
 * a module that needs another's state must come after it.
 */
#include "vgpu_internal.h"

const struct vgpu_module *const vgpu_modules[] = {
    &vgpu_module_account,  /* account.c: the allocation table */
    &vgpu_module_pool,     /* pool.c: pool records */
    &vgpu_module_context,  /* context.c: context footprints, the context cache */
    &vgpu_module_throttle, /* throttle.c: the launch gate, graph costs */
    &vgpu_module_marker,   /* marker.c: completion-marker rings, the in-flight bound */
    &vgpu_module_elastic,  /* elastic.c: VGPU_ELASTIC_WAIT_MS */
};
const size_t vgpu_nmodules = sizeof vgpu_modules / sizeof vgpu_modules[0];
