/*
 * alloc — the allocation workload (see workload_main in testutil.h), linked to
 * libcuda so that --path linked exercises interposition on linked symbols. The
 * other paths (dlsym, cuGetProcAddress) work here too; dl_alloc is the same
 * workload in a program that is not linked to the driver at all.
 */
#define VGPU_TEST_LINKED 1
#define VGPU_TEST_WORKLOAD 1
#include "testutil.h"

int main(int argc, char **argv)
{
    return workload_main(argc, argv);
}
