/* oom: every process the kernel's OOM killer picks as a victim.
 *
 * oom:mark_victim fires once per victim thread (guarded by TIF_MEMDIE), in
 * the context of the task whose allocation ran out of memory (the trigger),
 * NOT the victim. Two programs on that one tracepoint each supply half of a
 * record:
 *   vigil_oom_mark_victim       (tracepoint) the figures from the format:
 *                               pid (victim thread), comm, total_vm,
 *                               anon/file/shmem_rss, pgtables (all kB), uid,
 *                               oom_score_adj
 *   vigil_oom_mark_victim_task  (raw tracepoint) the victim's task_struct:
 *                               tgid, group leader start, and its cgroup v2
 *                               id (task->cgroups->dfl_cgrp->kn->id, what
 *                               bpf_get_current_cgroup_id() computes for
 *                               current), read at BTF offsets; plus the
 *                               trigger (current)
 * Both run in the same tracepoint call on one CPU with preemption off, in
 * an order that depends on attach history; whichever runs second completes
 * the per-CPU record and emits it. The format fields and the raw prototype
 * (task, uid) arrived in the same kernel change (6.x): on older kernels the
 * format lacks total_vm and this file does not compile, so the raw
 * argument is never misread.
 *
 * A multi-threaded victim can be marked once per thread (threads dying
 * under memory pressure mark themselves); one record per process is kept
 * with a small LRU of (tgid, start time) already reported.
 */
#include "vigil.h"

#ifndef OOM_RINGBUF_PAGES
#define OOM_RINGBUF_PAGES 16
#endif
#define OOM_REPORTED_MAX 1024

#define OOM_HALF_FIGURES (1 << 0) /* vigil_oom_mark_victim ran */
#define OOM_HALF_TASK (1 << 1)    /* vigil_oom_mark_victim_task ran */
#define OOM_HALVES (OOM_HALF_FIGURES | OOM_HALF_TASK)

/* Written by the agent; changing it needs no recompile. */
struct oom_config {
    u64 wake_bytes; /* wake the reader once this much data is waiting */
};

/* One ring buffer record. The agent's decoder is checked against this layout
 * by a test (tests/integration/test_oom_probe.py). */
struct oom_record {
    u64 ts;                /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
    u64 cgroup_id;         /* the victim's cgroup v2 id */
    u64 start_time;        /* victim group leader's start_time: CLOCK_MONOTONIC */
    u64 total_vm_kb;       /* the tracepoint's figures, in kB as it gives them */
    u64 anon_rss_kb;
    u64 file_rss_kb;
    u64 shmem_rss_kb;
    u64 pgtables_kb;
    u64 trigger_cgroup_id; /* cgroup v2 id of the task that ran out of memory */
    u32 pid;               /* the victim's tgid */
    u32 tid;               /* the victim thread the kernel marked */
    u32 uid;               /* the victim's real uid */
    u32 trigger_pid;       /* tgid of the task that ran out of memory */
    s32 oom_score_adj;
    u32 reserved;
    char comm[VIGIL_COMM_LEN];         /* the victim thread's comm */
    char trigger_comm[VIGIL_COMM_LEN];
};

/* The record being assembled on this CPU. */
struct oom_join {
    struct oom_record rec;
    u32 halves; /* OOM_HALF_* present in rec */
    u32 reserved;
};

BPF_RINGBUF_OUTPUT(oom_events, OOM_RINGBUF_PAGES);
BPF_ARRAY(oom_config, struct oom_config, 1);
BPF_PERCPU_ARRAY(oom_joins, struct oom_join, 1);
VIGIL_DROP_COUNTERS(oom_drops);
/* Halves whose partner never came (one program attached, the other not yet
 * or no longer): a victim lost in the kernel, counted. */
BPF_PERCPU_ARRAY(oom_unmatched, u64, 1);
/* tgid -> group leader start_time of victims already reported. */
BPF_TABLE("lru_hash", u32, u64, oom_reported, OOM_REPORTED_MAX);

/* The join slot for victim thread `tid`, with `half` about to be filled in. */
static __always_inline struct oom_join *oom_join_slot(u32 tid, u32 half)
{
    int zero = 0;
    struct oom_join *join = oom_joins.lookup(&zero);

    if (!join)
        return 0;
    if (join->halves && (join->rec.tid != tid || (join->halves & half))) {
        oom_unmatched.increment(zero);
        join->halves = 0;
    }
    join->rec.tid = tid;
    return join;
}

static __always_inline void oom_complete(struct oom_join *join, u32 half)
{
    int zero = 0;
    struct oom_record *rec = &join->rec;
    struct oom_config *cfg;
    u64 *reported;

    join->halves |= half;
    if (join->halves != OOM_HALVES)
        return;
    join->halves = 0;

    if (!vigil_selected(VIGIL_PROBE_OOM, rec->cgroup_id))
        return;
    reported = oom_reported.lookup(&rec->pid);
    if (reported && *reported == rec->start_time)
        return; /* another thread of a process already reported */
    oom_reported.update(&rec->pid, &rec->start_time);

    cfg = oom_config.lookup(&zero);
    if (oom_events.ringbuf_output(rec, sizeof(*rec), cfg ? cfg->wake_bytes : 0) < 0)
        oom_drops.increment(VIGIL_DROP_RINGBUF);
}

int vigil_oom_mark_victim(struct tracepoint__oom__mark_victim *args)
{
    struct oom_join *join = oom_join_slot((u32)args->pid, OOM_HALF_FIGURES);
    struct oom_record *rec;

    if (!join)
        return 0;
    rec = &join->rec;
    rec->total_vm_kb = args->total_vm;
    rec->anon_rss_kb = args->anon_rss;
    rec->file_rss_kb = args->file_rss;
    rec->shmem_rss_kb = args->shmem_rss;
    rec->pgtables_kb = args->pgtables;
    rec->uid = args->uid;
    rec->oom_score_adj = args->oom_score_adj;
    bpf_probe_read_kernel_str(rec->comm, sizeof(rec->comm),
                              (char *)args + (args->data_loc_comm & 0xFFFF));
    oom_complete(join, OOM_HALF_FIGURES);
    return 0;
}

/* Raw arguments: TP_PROTO(struct task_struct *task, uid_t uid). */
int vigil_oom_mark_victim_task(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *victim = (struct task_struct *)ctx->args[0];
    struct task_struct *leader = 0;
    struct oom_join *join;
    struct oom_record *rec;
    u32 tid = 0;

    VIGIL_READ(tid, victim, task_struct__pid);
    join = oom_join_slot(tid, OOM_HALF_TASK);
    if (!join)
        return 0;
    rec = &join->rec;
    rec->ts = bpf_ktime_get_ns();
    VIGIL_READ(rec->pid, victim, task_struct__tgid);
    VIGIL_READ(leader, victim, task_struct__group_leader);
    VIGIL_READ(rec->start_time, leader, task_struct__start_time);
    rec->cgroup_id = vigil_task_cgroup_id(victim); /* the victim is not current */

    rec->trigger_pid = bpf_get_current_pid_tgid() >> 32;
    rec->trigger_cgroup_id = bpf_get_current_cgroup_id();
    bpf_get_current_comm(rec->trigger_comm, sizeof(rec->trigger_comm));
    rec->reserved = 0;
    oom_complete(join, OOM_HALF_TASK);
    return 0;
}
