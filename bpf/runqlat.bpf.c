/* runqlat: how long runnable tasks wait for a CPU, per cgroup, in the kernel.
 *
 *   sched_wakeup, sched_wakeup_new (raw)  a task enters a run queue: note when
 *   sched_switch (raw)                    prev leaves the CPU: if still runnable it
 *                                         was preempted (counted) and waits again;
 *                                         next gets the CPU: its wait ends
 *   cgroup_rmdir (raw)                    the cgroup's aggregate is retired
 *
 * Nothing streams: per cgroup, a log2 histogram of waits (ns, vigil_log2_slot,
 * so slots map 1:1 to OpenTelemetry buckets), their sum, and the count of
 * preemptions live in a per-CPU hash the agent reads every export interval.
 *
 * Which cgroup a wait belongs to is fixed when the task is enqueued, the one
 * moment we know it at the right cost:
 *   - preempted at sched_switch: prev is `current`, so
 *     bpf_get_current_cgroup_id() is exact and cheap;
 *   - at a wakeup the task is not current: its cgroup comes from the task,
 *     task->cgroups->dfl_cgrp->kn->id, read at BTF offsets (four reads; the
 *     css_set is RCU-protected and tracepoints run inside an RCU section).
 * Deciding there (not at switch-in) also filters early: with a selection in
 * force, a task of an unselected cgroup never touches runqlat_start.
 *
 * sched_switch's prev_state argument needs Linux >= 5.18. A switch counts as
 * a preemption exactly when the kernel counts it in nivcsw: `preempt`, or
 * prev_state == TASK_RUNNING (yield, a block aborted by a signal).
 */
#include "vigil.h"

#ifndef RUNQLAT_MAX_CGROUPS
#define RUNQLAT_MAX_CGROUPS 4096
#endif
#ifndef RUNQLAT_MAX_TASKS
#define RUNQLAT_MAX_TASKS 32768
#endif

/* include/linux/sched.h: stable values, also in sched_switch's print format. */
#define RUNQLAT_TASK_RUNNING 0x0
#define RUNQLAT_TASK_DEAD 0x80

/* Written by the agent; changing it needs no recompile. */
struct runqlat_config {
    u32 histogram; /* 0: count preemptions only */
    u32 reserved;
};

/* A task on a run queue since `ts`, charged to `cgroup_id`. */
struct runqlat_start {
    u64 ts;
    u64 cgroup_id;
};

/* Per cgroup and CPU; the agent sums the CPUs. Checked against
 * agent/probes/runqlat.py (CgroupLeaf) by a test. */
struct runqlat_cgroup {
    u64 slots[VIGIL_LOG2_SLOTS]; /* waits per log2 slot of ns */
    u64 sum_ns;                  /* sum of the waits */
    u64 preemptions;             /* involuntary switches out */
};

BPF_ARRAY(runqlat_config, struct runqlat_config, 1);
/* Keyed by thread id. LRU: a task that dies runnable is removed at its last
 * switch, but the map must stay bounded whatever happens. */
BPF_TABLE("lru_hash", u32, struct runqlat_start, runqlat_start, RUNQLAT_MAX_TASKS);
/* Not preallocated: memory follows the cgroups seen, not max x CPUs x 400 B. */
BPF_F_TABLE("percpu_hash", u64, struct runqlat_cgroup, runqlat_cgroups, RUNQLAT_MAX_CGROUPS,
            BPF_F_NO_PREALLOC);
/* Cgroups removed since the agent last read: reported once more, then deleted. */
BPF_HASH(runqlat_retired, u64, u8, RUNQLAT_MAX_CGROUPS);
/* Never written: the zero value new aggregates start from (too big for the stack). */
BPF_PERCPU_ARRAY(runqlat_zero, struct runqlat_cgroup, 1);
VIGIL_DROP_COUNTERS(runqlat_drops);

static __always_inline bool runqlat_histogram_on(void)
{
    int zero = 0;
    struct runqlat_config *cfg = runqlat_config.lookup(&zero);
    return cfg && cfg->histogram;
}

static __always_inline struct runqlat_cgroup *runqlat_aggregate(u64 cgroup_id)
{
    int zero = 0;
    struct runqlat_cgroup *init = runqlat_zero.lookup(&zero), *agg;

    if (!init)
        return 0;
    agg = runqlat_cgroups.lookup_or_try_init(&cgroup_id, init);
    if (!agg)
        runqlat_drops.increment(VIGIL_DROP_MAP_FULL);
    return agg;
}

static __always_inline void runqlat_enqueue(u32 tid, u64 cgroup_id, u64 now)
{
    struct runqlat_start start = {.ts = now, .cgroup_id = cgroup_id};
    runqlat_start.update(&tid, &start);
}

static __always_inline int runqlat_wakeup(struct task_struct *task)
{
    void *css = 0, *cgrp = 0, *kn = 0;
    u64 cgroup_id = 0;
    u32 tid = 0;

    if (!runqlat_histogram_on())
        return 0;
    VIGIL_READ(tid, task, task_struct__pid);
    if (tid == 0)
        return 0;
    VIGIL_READ(css, task, task_struct__cgroups);
    VIGIL_READ(cgrp, css, css_set__dfl_cgrp);
    VIGIL_READ(kn, cgrp, cgroup__kn);
    VIGIL_READ(cgroup_id, kn, kernfs_node__id);
    if (!vigil_selected(cgroup_id))
        return 0;
    runqlat_enqueue(tid, cgroup_id, bpf_ktime_get_ns());
    return 0;
}

int vigil_runqlat_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
    return runqlat_wakeup((struct task_struct *)ctx->args[0]);
}

int vigil_runqlat_wakeup_new(struct bpf_raw_tracepoint_args *ctx)
{
    return runqlat_wakeup((struct task_struct *)ctx->args[0]);
}

/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
 *          unsigned int prev_state); runs while prev is still current. */
int vigil_runqlat_switch(struct bpf_raw_tracepoint_args *ctx)
{
    bool preempt = (bool)ctx->args[0];
    struct task_struct *next = (struct task_struct *)ctx->args[2];
    u32 prev_state = (u32)ctx->args[3];
    u32 prev_tid = (u32)bpf_get_current_pid_tgid(), next_tid = 0;
    bool histogram = runqlat_histogram_on();
    struct runqlat_start *start;
    struct runqlat_cgroup *agg;
    u64 now = bpf_ktime_get_ns(), cgroup_id, wait;
    u32 slot;

    if (prev_tid != 0) { /* tid 0: this CPU's idle task */
        if (preempt || prev_state == RUNQLAT_TASK_RUNNING) {
            cgroup_id = bpf_get_current_cgroup_id();
            if (vigil_selected(cgroup_id)) {
                agg = runqlat_aggregate(cgroup_id);
                if (agg)
                    agg->preemptions += 1;
                if (histogram)
                    runqlat_enqueue(prev_tid, cgroup_id, now);
            }
        } else if (prev_state & RUNQLAT_TASK_DEAD) {
            /* Its last switch: drop a start left by a wakeup while it ran. */
            runqlat_start.delete(&prev_tid);
        }
    }

    if (!histogram)
        return 0;
    VIGIL_READ(next_tid, next, task_struct__pid);
    if (next_tid == 0)
        return 0;
    start = runqlat_start.lookup(&next_tid);
    if (!start)
        return 0; /* enqueued before we attached, unselected, or evicted */
    wait = now > start->ts ? now - start->ts : 0;
    cgroup_id = start->cgroup_id;
    runqlat_start.delete(&next_tid);

    agg = runqlat_aggregate(cgroup_id);
    if (!agg)
        return 0;
    slot = vigil_log2_slot(wait);
    if (slot >= VIGIL_LOG2_SLOTS) /* repeated where the verifier can see it */
        slot = VIGIL_LOG2_SLOTS - 1;
    agg->slots[slot] += 1;
    agg->sum_ns += wait;
    return 0;
}

/* TP_PROTO(struct cgroup *cgrp, const char *path). Raw: the classic form's
 * argument struct would clash with other probes' in one compiled module. */
int vigil_runqlat_rmdir(struct bpf_raw_tracepoint_args *ctx)
{
    void *cgrp = (void *)ctx->args[0], *root = 0, *kn = 0;
    int hierarchy = -1;
    u64 cgroup_id = 0;
    u8 one = 1;

    VIGIL_READ(root, cgrp, cgroup__root);
    VIGIL_READ(hierarchy, root, cgroup_root__hierarchy_id);
    if (hierarchy != 0)
        return 0; /* a cgroup v1 hierarchy: ids of another space */
    VIGIL_READ(kn, cgrp, cgroup__kn);
    VIGIL_READ(cgroup_id, kn, kernfs_node__id);
    if (runqlat_cgroups.lookup(&cgroup_id) && runqlat_retired.update(&cgroup_id, &one) < 0)
        runqlat_drops.increment(VIGIL_DROP_MAP_FULL);
    return 0;
}
