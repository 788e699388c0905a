/*
 * alloc — the allocation workload (workload_main in testutil.c), linked to
 * libcuda so that --path linked exercises interposition on linked symbols. The
 * other paths (dlsym, cuGetProcAddress) work here too; dl_alloc is the same
 * workload in a program that is not linked to the driver at all.
 */
#include "testutil.h"

int main(int argc, char **argv) { return workload_main(argc, argv, resolve_linked); }
