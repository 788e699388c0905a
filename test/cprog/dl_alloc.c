/*
 * dl_alloc — the allocation workload (testutil.c) in a program that is NOT linked
 * to libcuda: like PyTorch or any framework it dlopen()s the driver and gets every
 * entry point by dlsym or cuGetProcAddress, so libvgpu can only intercept it on
 * those two paths.
 */
#include "testutil.h"

int main(int argc, char **argv)
{
    return workload_main(argc, argv, NULL); /* no --path linked here */
}
