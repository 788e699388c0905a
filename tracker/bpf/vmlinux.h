/* The few kernel types the tracker's programs read, declared by hand.
 *
 * Why not a full `bpftool btf dump` vmlinux.h: that file is ~3 MB per kernel
 * version, and the programs read a dozen fields. With preserve_access_index
 * every field access below is a CO-RE relocation: the loader finds each
 * field's real offset in the running kernel's BTF (/sys/kernel/btf/vmlinux),
 * so these declarations only have to name the fields, not match the layout. */
#ifndef VGPU_TRACKER_VMLINUX_H
#define VGPU_TRACKER_VMLINUX_H

#include <linux/types.h>
#include <linux/bpf.h>

typedef __u8 u8;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef int pid_t;
typedef __u32 dev_t;
typedef unsigned short umode_t;
typedef _Bool bool;

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
    int counter;
} atomic_t;

struct kernfs_node {
    u64 id; /* the cgroup id (>= 5.5): bpf_get_current_cgroup_id() and the inode number */
};

struct cgroup {
    struct kernfs_node *kn;
};

struct css_set {
    struct cgroup *dfl_cgrp; /* the task's cgroup v2 */
};

struct signal_struct {
    atomic_t live; /* threads of the group not yet exited */
};

struct ns_common {
    unsigned int inum; /* the namespace's inode: readlink /proc/<pid>/ns/pid */
};

struct pid_namespace {
    struct ns_common ns;
};

struct upid {
    int nr; /* the pid as seen in ns */
    struct pid_namespace *ns;
};

struct pid {
    unsigned int level; /* depth of the innermost pid namespace (0: the host's) */
    struct upid numbers[1]; /* numbers[0..level], outermost first */
};

struct task_struct {
    pid_t pid;  /* thread id (host pid namespace) */
    pid_t tgid; /* process id */
    u64 start_boottime;
    struct task_struct *real_parent;
    struct task_struct *group_leader;
    struct css_set *cgroups;
    struct signal_struct *signal;
    struct files_struct *files;
    struct pid *thread_pid; /* the task's struct pid (>= 4.19) */
};

struct inode {
    umode_t i_mode;
    dev_t i_rdev;
};

struct file {
    struct inode *f_inode;
};

struct fdtable {
    struct file **fd; /* current fd array */
};

struct files_struct {
    struct fdtable *fdt;
};

#pragma clang attribute pop

#endif
