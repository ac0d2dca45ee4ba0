/* process: the lifecycle of every process on the node.
 *
 *   sched_process_fork (raw)  a new process (threads are skipped)
 *   sched_process_exec        path from the tracepoint (the kernel's copy),
 *                             argv from the new image's mm->arg_start..arg_end
 *   sched_process_exit        once per process: when its last thread exits
 *   sched_process_free        the process was reaped (zombie accounting)
 *
 * Kernel struct members are read at BTF offsets (VIGIL_READ); see vigil.h.
 * Records stream through process_events; zombies are counted per cgroup in
 * the kernel and read by the agent every interval.
 */
#include "vigil.h"

#define PROCESS_EXEC 1
#define PROCESS_FORK 2
#define PROCESS_EXIT 3

#define PROCESS_F_ARGS_UNREADABLE (1 << 0)

/* Powers of two: offsets and lengths are masked with (MAX - 1) so the
 * verifier sees their bounds. A path is at most FILENAME_MAX - 1 bytes, argv
 * at most ARGS_MAX - 1 bytes (longer argv is truncated and flagged). */
#define PROCESS_FILENAME_MAX 1024
#define PROCESS_ARGS_MAX 4096

#ifndef PROCESS_RINGBUF_PAGES
#define PROCESS_RINGBUF_PAGES 1024
#endif
#define PROCESS_ZOMBIES_MAX 65536
#define PROCESS_CGROUPS_MAX 16384

/* Written by the agent; changing these needs no recompile. */
struct process_config {
    u64 wake_bytes;     /* wake the reader once this much data is waiting */
    u32 args_max_bytes; /* bytes of argv to capture; 0 = do not capture */
    u32 reserved;
};

/* One ring buffer record. The agent's decoder is checked against this layout
 * by a test (tests/integration/test_process_probe.py). */
struct process_record {
    u64 ts;            /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u64 cgroup_id;     /* cgroup v2 id = inode of the cgroup directory */
    u64 start_time;    /* group leader's start_time: CLOCK_MONOTONIC at fork */
    u32 kind;          /* PROCESS_EXEC / _FORK / _EXIT */
    u32 pid;           /* tgid */
    u32 tid;           /* the thread that triggered the record */
    u32 ppid;          /* real_parent's tgid */
    u32 uid;
    u32 gid;
    s32 exit_status;   /* raw wait status: code = v >> 8, signal = v & 0x7f */
    u32 flags;         /* PROCESS_F_* */
    u32 filename_len;  /* bytes of data[] holding the path, with its NUL */
    u32 args_len;      /* bytes of data[] after the path holding argv */
    u32 args_total;    /* arg_end - arg_start: argv's real length */
    u32 reserved;
    char comm[VIGIL_COMM_LEN];
    char data[PROCESS_FILENAME_MAX + PROCESS_ARGS_MAX];
};

BPF_RINGBUF_OUTPUT(process_events, PROCESS_RINGBUF_PAGES);
BPF_ARRAY(process_config, struct process_config, 1);
BPF_PERCPU_ARRAY(process_scratch, struct process_record, 1);
VIGIL_DROP_COUNTERS(process_drops);
/* tgid -> cgroup id of processes that exited and are not yet reaped. */
BPF_HASH(process_zombies, u32, u64, PROCESS_ZOMBIES_MAX);
/* cgroup id -> number of zombies in it. */
BPF_HASH(process_zombie_counts, u64, s64, PROCESS_CGROUPS_MAX);

static __always_inline void process_fill(struct process_record *rec, u32 kind,
                                         struct task_struct *task)
{
    struct task_struct *parent = 0, *leader = 0;
    u64 uid_gid = bpf_get_current_uid_gid();

    rec->ts = bpf_ktime_get_ns();
    rec->cgroup_id = bpf_get_current_cgroup_id();
    rec->kind = kind;
    rec->uid = (u32)uid_gid;
    rec->gid = uid_gid >> 32;
    rec->exit_status = 0;
    rec->flags = 0;
    rec->filename_len = 0;
    rec->args_len = 0;
    rec->args_total = 0;
    VIGIL_READ(rec->pid, task, task_struct__tgid);
    VIGIL_READ(rec->tid, task, task_struct__pid);
    /* The process's start, even when its last thread is not the leader. */
    VIGIL_READ(leader, task, task_struct__group_leader);
    VIGIL_READ(rec->start_time, leader, task_struct__start_time);
    VIGIL_READ(parent, task, task_struct__real_parent);
    VIGIL_READ(rec->ppid, parent, task_struct__tgid);
    bpf_get_current_comm(rec->comm, sizeof(rec->comm));
}

static __always_inline struct process_record *process_scratch_record(void)
{
    int zero = 0;
    return process_scratch.lookup(&zero);
}

static __always_inline u64 process_wake_bytes(void)
{
    int zero = 0;
    struct process_config *cfg = process_config.lookup(&zero);
    return cfg ? cfg->wake_bytes : 0;
}

static __always_inline void process_emit(struct process_record *rec, u64 size)
{
    if (!vigil_selected(VIGIL_PROBE_PROCESS, rec->cgroup_id))
        return;
    if (process_events.ringbuf_output(rec, size, process_wake_bytes()) < 0)
        process_drops.increment(VIGIL_DROP_RINGBUF);
}

int vigil_process_fork(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *child = (struct task_struct *)ctx->args[1];
    struct process_record *rec = process_scratch_record();
    u32 child_pid = 0, child_tgid = 0;

    if (!rec)
        return 0;
    VIGIL_READ(child_pid, child, task_struct__pid);
    VIGIL_READ(child_tgid, child, task_struct__tgid);
    if (child_pid != child_tgid)
        return 0; /* a new thread of an existing process */

    /* uid, gid, cgroup and comm are the parent's: the child inherits them. */
    process_fill(rec, PROCESS_FORK, child);
    process_emit(rec, offsetof(struct process_record, data));
    return 0;
}

int vigil_process_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct process_record *rec = process_scratch_record();
    int zero = 0;
    struct process_config *cfg = process_config.lookup(&zero);
    void *mm = 0;
    u64 arg_start = 0, arg_end = 0, len = 0;
    u32 name_len, max_bytes, own_bytes;
    long n;

    if (!rec || !cfg)
        return 0;
    process_fill(rec, PROCESS_EXEC, task);

    n = bpf_probe_read_kernel_str(rec->data, PROCESS_FILENAME_MAX,
                                  (char *)args + (args->data_loc_filename & 0xFFFF));
    name_len = n > 0 ? (u32)n : 0;
    name_len &= PROCESS_FILENAME_MAX - 1; /* n <= FILENAME_MAX - 1 + NUL fits */
    rec->filename_len = name_len;

    /* The node's capture, raised for cgroups whose policies ask for more. */
    max_bytes = cfg->args_max_bytes;
    own_bytes = vigil_cgroup_args_bytes(rec->cgroup_id);
    if (own_bytes > max_bytes)
        max_bytes = own_bytes;
    if (max_bytes) {
        /* The new image's argv: written by the kernel during exec, resident. */
        VIGIL_READ(mm, task, task_struct__mm);
        VIGIL_READ(arg_start, mm, mm_struct__arg_start);
        VIGIL_READ(arg_end, mm, mm_struct__arg_end);
        if (arg_end > arg_start) {
            rec->args_total = arg_end - arg_start;
            len = rec->args_total;
            if (len > max_bytes)
                len = max_bytes;
            if (len > PROCESS_ARGS_MAX - 1)
                len = PROCESS_ARGS_MAX - 1;
            len &= PROCESS_ARGS_MAX - 1;
            if (bpf_probe_read_user(&rec->data[name_len], len, (void *)arg_start) < 0) {
                rec->flags |= PROCESS_F_ARGS_UNREADABLE;
                len = 0;
            }
        }
    }
    rec->args_len = len;
    process_emit(rec, offsetof(struct process_record, data) + name_len + len);
    return 0;
}

int vigil_process_exit(struct tracepoint__sched__sched_process_exit *args)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct process_record *rec = process_scratch_record();
    void *signal = 0;
    int live = 1;
    s64 zero_count = 0, *count;

    if (!rec)
        return 0;
    /* signal->live is decremented before this tracepoint: 0 means the last
     * thread of the process is exiting (portable; newer kernels also pass
     * group_dead). */
    VIGIL_READ(signal, task, task_struct__signal);
    VIGIL_READ(live, signal, signal_struct__live);
    if (live != 0)
        return 0;

    process_fill(rec, PROCESS_EXIT, task);
    VIGIL_READ(rec->exit_status, task, task_struct__exit_code);
    process_emit(rec, offsetof(struct process_record, data));

    if (process_zombies.update(&rec->pid, &rec->cgroup_id) < 0) {
        process_drops.increment(VIGIL_DROP_MAP_FULL);
        return 0;
    }
    count = process_zombie_counts.lookup_or_try_init(&rec->cgroup_id, &zero_count);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        process_drops.increment(VIGIL_DROP_MAP_FULL);
    return 0;
}

int vigil_process_free(struct tracepoint__sched__sched_process_free *args)
{
    u32 pid = args->pid;
    u64 *cgroup_id = process_zombies.lookup(&pid);
    s64 *count;

    if (!cgroup_id)
        return 0; /* a thread, or a process that exited before we attached */
    count = process_zombie_counts.lookup(cgroup_id);
    if (count)
        __sync_fetch_and_add(count, -1);
    process_zombies.delete(&pid);
    return 0;
}
