/*
 * sim_layout — prints the simulated node's state-file layout as the C compiler sees
 * it ("name offset size" per line). The Go mirror (test/simgpu/layout.go) is
 * compared against this output by TestLayoutMatchesC.
 */
#include <stddef.h>
#include <stdio.h>

#include "../simgpu/state.h"

#define F(type, field)                                                     \
    printf("%s.%s %zu %zu\n", #type, #field, offsetof(struct type, field), \
           sizeof(((struct type *)0)->field))
#define S(type) printf("%s 0 %zu\n", #type, sizeof(struct type))
#define C(name, val) printf("const.%s %llu 0\n", name, (unsigned long long)(val))

int main(void)
{
    S(sim_state);
    F(sim_state, dev);
    F(sim_state, proc);
    S(sim_hdr);
    F(sim_hdr, magic);
    F(sim_hdr, version);
    F(sim_hdr, hdr_size);
    F(sim_hdr, file_size);
    F(sim_hdr, device_count);
    F(sim_hdr, max_procs);
    F(sim_hdr, max_devices);
    F(sim_hdr, nbuckets);
    F(sim_hdr, bucket_ns);
    F(sim_hdr, ns_per_block);
    F(sim_hdr, context_memory);
    F(sim_hdr, max_backlog_ns);
    F(sim_hdr, created_unix_ns);
    F(sim_hdr, device_nodes);
    F(sim_hdr, reserved);
    F(sim_hdr, dev);
    S(sim_devcfg);
    F(sim_devcfg, name);
    F(sim_devcfg, uuid);
    F(sim_devcfg, pci_bus_id);
    F(sim_devcfg, total_mem);
    F(sim_devcfg, sms);
    F(sim_devcfg, minor);
    F(sim_devcfg, pci_domain);
    F(sim_devcfg, pci_bus);
    F(sim_devcfg, pci_device);
    F(sim_devcfg, pci_device_id);
    F(sim_devcfg, pci_subsys_id);
    F(sim_devcfg, cc_major);
    F(sim_devcfg, cc_minor);
    S(sim_devstate);
    F(sim_devstate, used);
    F(sim_devstate, busy_until);
    F(sim_devstate, busy_total);
    F(sim_devstate, launches);
    F(sim_devstate, va_cursor);
    F(sim_devstate, used_high);
    F(sim_devstate, buckets);
    S(sim_procdev);
    F(sim_procdev, used);
    F(sim_procdev, busy_ns);
    F(sim_procdev, launches);
    F(sim_procdev, contexts);
    F(sim_procdev, buckets);
    S(sim_proc);
    F(sim_proc, state);
    F(sim_proc, start_time);
    F(sim_proc, pidns);
    F(sim_proc, registered_ns);
    F(sim_proc, comm);
    F(sim_proc, dev);
    C("SIM_MAGIC_lo", SIM_MAGIC & 0xffffffffull);
    C("SIM_MAGIC_hi", SIM_MAGIC >> 32);
    C("SIM_VERSION", SIM_VERSION);
    C("SIM_MAX_DEVICES", SIM_MAX_DEVICES);
    C("SIM_MAX_PROCS", SIM_MAX_PROCS);
    C("SIM_NBUCKETS", SIM_NBUCKETS);
    C("SIM_HISTORY_SAMPLES", SIM_HISTORY_SAMPLES);
    C("SIM_FUTURE_BUCKETS", SIM_FUTURE_BUCKETS);
    C("SIM_BACKLOG_PERIODS", SIM_BACKLOG_PERIODS);
    C("SIM_MIN_SAMPLE_NS", SIM_MIN_SAMPLE_NS);
    C("SIM_MAX_SAMPLE_NS", SIM_MAX_SAMPLE_NS);
    C("SIM_MAX_BACKLOG_NS", SIM_MAX_BACKLOG_NS);
    C("SIM_BUCKET_EPOCH_SH", SIM_BUCKET_EPOCH_SHIFT);
    return 0;
}
