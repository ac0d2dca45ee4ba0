/* syscalls: per cgroup and syscall, call counts, errors and (latency mode)
 * a log2 latency histogram aggregated in the kernel; in latency mode, calls
 * slower than a threshold stream as records.
 *
 * SYSCALLS_LATENCY (compile time, the probe's `latency` setting) picks one
 * of two modes:
 *
 * Latency (1): two programs.
 *   raw_syscalls:sys_enter (raw)  args[1] is the syscall id: one array lookup
 *                                 decides whether it is traced at all, then
 *                                 the start goes to task storage
 *   raw_syscalls:sys_exit (raw)   args[1] is the return value; the start
 *                                 and stats key come from task storage: a
 *                                 task without a traced syscall in flight
 *                                 pays one storage lookup (checking the id
 *                                 from pt_regs first measured ~4 ns slower)
 *
 * Count only (0): one program, no clock read, no task storage.
 *   raw_syscalls:sys_exit (raw)   the id is the task's pt_regs->orig_ax (BTF
 *                                 offset; read through bpf_task_pt_regs, a
 *                                 typed pointer: a plain load, no probe-read
 *                                 helper), the return value args[1]; one
 *                                 array lookup decides, then one per-CPU
 *                                 hash update
 *
 * Enabling these tracepoints puts every syscall of every task on the
 * tracing slow path (~190 ns each here even with empty programs): the probe
 * is opt-in. Everything after the id check costs only traced syscalls.
 */
#include "vigil.h"

/* x86_64 syscall ids are below this; x32 ids (bit 30 set) and -1 are ignored. */
#define SYSCALLS_IDS 512

#ifndef SYSCALLS_RINGBUF_PAGES
#define SYSCALLS_RINGBUF_PAGES 64
#endif
#ifndef SYSCALLS_STATS_MAX
#define SYSCALLS_STATS_MAX 8192
#endif
#ifndef SYSCALLS_LATENCY
#define SYSCALLS_LATENCY 1
#endif

/* syscalls_set[id]: 0 = not traced; else the call is counted and, when it
 * takes at least that many ns, streamed (~0: never). Written by the agent. */
BPF_ARRAY(syscalls_set, u64, SYSCALLS_IDS);

struct syscalls_config {
    u64 wake_bytes; /* wake the reader once this much data is waiting */
};
BPF_ARRAY(syscalls_config, struct syscalls_config, 1);

/* The stats key: (cgroup id << SYSCALLS_ID_BITS) | syscall id, one u64 (a
 * lookup hashes it ~3 ns faster than a 16-byte struct here). cgroup ids are
 * kernfs node ids: on 64-bit kernels the idr number (< 2^31) plus, above bit
 * 32, how often that number wrapped, so they stay far below 2^55. One that
 * does not fit is counted as map_full, never folded into another's. */
#define SYSCALLS_ID_BITS 9
#define SYSCALLS_CGROUP_BITS (64 - SYSCALLS_ID_BITS)
_Static_assert(SYSCALLS_IDS == 1 << SYSCALLS_ID_BITS, "ids must fill the id bits");

static __always_inline bool syscalls_key_fits(u64 cgroup_id)
{
    return (cgroup_id >> SYSCALLS_CGROUP_BITS) == 0;
}

/* Per CPU (no atomics on the hot path); the agent sums the CPUs. Slots as in
 * vigil_log2_slot(): OpenTelemetry explicit buckets with bounds 2^k ns. */
struct syscalls_stats {
    u64 count;
    u64 errors; /* returned -4095..-1 */
#if SYSCALLS_LATENCY
    u64 sum_ns;
    u64 slots[VIGIL_LOG2_SLOTS];
#endif
};
/* Not preallocated: memory follows the pairs in use, not max entries x CPUs. */
BPF_F_TABLE("percpu_hash", u64, struct syscalls_stats, syscalls_stats,
            SYSCALLS_STATS_MAX, BPF_F_NO_PREALLOC);

/* One slow syscall. The agent's decoder is checked against this layout by
 * a test (tests/integration/test_syscalls_probe.py). */
struct syscalls_record {
    u64 ts;          /* exit, CLOCK_MONOTONIC */
    u64 cgroup_id;
    u64 duration_ns;
    s64 ret;         /* the raw return value: -errno on failure */
    u32 pid;         /* tgid */
    u32 tid;
    u32 id;          /* syscall id */
    u32 reserved;
    char comm[VIGIL_COMM_LEN];        /* the thread's */
    char leader_comm[VIGIL_COMM_LEN]; /* the process's (its main thread) */
};

/* Declared in both modes (the agent opens it); count only writes nothing
 * to it and the agent then sizes it at one page. */
BPF_RINGBUF_OUTPUT(syscalls_events, SYSCALLS_RINGBUF_PAGES);
VIGIL_DROP_COUNTERS(syscalls_drops);

static __always_inline bool syscalls_is_error(s64 ret)
{
    return ret < 0 && ret >= -4095;
}

#if SYSCALLS_LATENCY

/* The traced syscall a task is in. Task storage, not a per-CPU slot: a task
 * may sleep in a syscall and return on another CPU. Freed with the task. */
struct syscalls_start {
    u64 ts;      /* bpf_ktime_get_ns() at entry; 0: nothing in flight */
    u64 key;     /* the stats key: cgroup id at entry and syscall id */
    u64 slow_ns; /* syscalls_set[id] at entry */
};
BPF_TASK_STORAGE(syscalls_start, struct syscalls_start);

/* The zeroed value new entries start from (too big for the BPF stack). */
BPF_PERCPU_ARRAY(syscalls_zero, struct syscalls_stats, 1);

int vigil_syscalls_enter(struct bpf_raw_tracepoint_args *ctx)
{
    u64 id = ctx->args[1];
    u32 index;
    u64 *slow_ns, cgroup_id;
    struct syscalls_start *start;

    if (id >= SYSCALLS_IDS)
        return 0;
    index = id;
    slow_ns = syscalls_set.lookup(&index);
    if (!slow_ns || !*slow_ns)
        return 0; /* the common case: not in the set */

    cgroup_id = bpf_get_current_cgroup_id();
    if (!vigil_selected(VIGIL_PROBE_SYSCALLS, cgroup_id))
        return 0;
    if (!syscalls_key_fits(cgroup_id)) {
        syscalls_drops.increment(VIGIL_DROP_MAP_FULL);
        return 0;
    }
    start = syscalls_start.task_storage_get(bpf_get_current_task_btf(), 0,
                                            BPF_LOCAL_STORAGE_GET_F_CREATE);
    if (!start) {
        syscalls_drops.increment(VIGIL_DROP_MAP_FULL);
        return 0;
    }
    start->key = cgroup_id << SYSCALLS_ID_BITS | index;
    start->slow_ns = *slow_ns;
    start->ts = bpf_ktime_get_ns();
    return 0;
}

static __always_inline void syscalls_emit(struct syscalls_start *start, u64 now,
                                          u64 duration, s64 ret)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    struct task_struct *leader = 0;
    struct syscalls_record rec = {};
    struct syscalls_config *cfg;
    u64 pid_tgid = bpf_get_current_pid_tgid();
    int zero = 0;

    rec.ts = now;
    rec.cgroup_id = start->key >> SYSCALLS_ID_BITS;
    rec.duration_ns = duration;
    rec.ret = ret;
    rec.pid = pid_tgid >> 32;
    rec.tid = (u32)pid_tgid;
    rec.id = start->key & (SYSCALLS_IDS - 1);
    bpf_get_current_comm(rec.comm, sizeof(rec.comm));
    VIGIL_READ(leader, task, task_struct__group_leader);
    VIGIL_READ(rec.leader_comm, leader, task_struct__comm);

    cfg = syscalls_config.lookup(&zero);
    if (syscalls_events.ringbuf_output(&rec, sizeof(rec), cfg ? cfg->wake_bytes : 0) < 0)
        syscalls_drops.increment(VIGIL_DROP_RINGBUF);
}

int vigil_syscalls_exit(struct bpf_raw_tracepoint_args *ctx)
{
    struct syscalls_start *start;
    struct syscalls_stats *stats;
    s64 ret = (s64)ctx->args[1];
    u64 key, now, duration;
    u32 slot;
    int zero = 0;

    start = syscalls_start.task_storage_get(bpf_get_current_task_btf(), 0, 0);
    if (!start || !start->ts)
        return 0; /* no traced syscall in flight (or it began before attach) */
    now = bpf_ktime_get_ns();
    duration = now - start->ts;
    start->ts = 0;

    key = start->key;
    stats = syscalls_stats.lookup(&key);
    if (!stats) {
        struct syscalls_stats *initial = syscalls_zero.lookup(&zero);
        if (initial)
            stats = syscalls_stats.lookup_or_try_init(&key, initial);
    }
    if (stats) {
        stats->count++;
        if (syscalls_is_error(ret))
            stats->errors++;
        stats->sum_ns += duration;
        slot = vigil_log2_slot(duration);
        if (slot < VIGIL_LOG2_SLOTS)
            stats->slots[slot]++;
    } else {
        syscalls_drops.increment(VIGIL_DROP_MAP_FULL);
    }

    if (duration >= start->slow_ns)
        syscalls_emit(start, now, duration, ret);
    return 0;
}

#else /* count only */

int vigil_syscalls_count(struct bpf_raw_tracepoint_args *ctx)
{
    s64 ret = (s64)ctx->args[1];
    struct syscalls_stats *stats, initial = {};
    u64 id, key, cgroup_id, *traced;
    u32 index;

    /* orig_ax: the id the call entered with (-1 when none, e.g. a call
     * skipped by seccomp or ptrace; out of range, like x32 ids). The
     * verifier checks the load against the kernel's BTF of pt_regs. */
    _Static_assert(VIGIL_SIZE_pt_regs__orig_ax == sizeof(id), "orig_ax is a u64");
    id = *(u64 *)((char *)bpf_task_pt_regs(bpf_get_current_task_btf()) +
                  VIGIL_OFF_pt_regs__orig_ax);
    if (id >= SYSCALLS_IDS)
        return 0;
    index = id;
    traced = syscalls_set.lookup(&index);
    if (!traced || !*traced)
        return 0; /* the common case: not in the set */

    cgroup_id = bpf_get_current_cgroup_id();
    if (!vigil_selected(VIGIL_PROBE_SYSCALLS, cgroup_id))
        return 0;
    key = cgroup_id << SYSCALLS_ID_BITS | index;
    stats = 0;
    if (syscalls_key_fits(cgroup_id)) {
        stats = syscalls_stats.lookup(&key);
        if (!stats)
            stats = syscalls_stats.lookup_or_try_init(&key, &initial);
    }
    if (!stats) {
        syscalls_drops.increment(VIGIL_DROP_MAP_FULL);
        return 0;
    }
    stats->count++;
    if (syscalls_is_error(ret))
        stats->errors++;
    return 0;
}

#endif
