/* runqlat: how long runnable tasks wait for a CPU, per cgroup, in the kernel.
 *
 *   sched_switch (raw)         prev leaves the CPU: remember its cgroup; if it is
 *                              still runnable it was preempted (counted) and
 *                              starts waiting; next gets the CPU: its wait ends
 *   sched_wakeup(_new) (raw)   a task enters a run queue: it starts waiting
 *   cgroup_attach_task (raw)   some task changed cgroup: remembered cgroups are
 *                              re-checked at their next wakeup
 *   cgroup_rmdir (raw)         the cgroup's aggregate is retired
 *
 * Nothing streams: per cgroup, a log2 histogram of waits (ns, vigil_log2_slot,
 * so slots map 1:1 to OpenTelemetry buckets), their sum, and the count of
 * preemptions live in a per-CPU hash the agent reads every export interval.
 *
 * The cheapest correct design we found (measured with bench/sched.py): one
 * entry per task, kept across its sleeps and updated in place, so the hot
 * path is three hash lookups per sleep/wake/run cycle and no insert, delete
 * or pointer chase:
 *   - at every switch-out prev is `current`: its cgroup costs one helper
 *     call (bpf_get_current_cgroup_id) and is stored with the entry;
 *   - a wakeup, in another task's context, only stamps the entry's start;
 *   - the switch-in reads the wait and charges it to the stored cgroup.
 * The stored cgroup can only go stale if the task is moved to another
 * cgroup while it is off the CPU. Every move bumps runqlat_generation, and a
 * wakeup that finds an entry of an older generation (or none: a new task)
 * reads the cgroup from the task instead, task->cgroups->dfl_cgrp->kn->id at
 * BTF offsets (the css_set is RCU-protected; tracepoints run in an RCU
 * section). So a wait is charged to the cgroup the task was in when it was
 * enqueued, and moves, rare on a node, cost one pointer chase per task.
 *
 * sched_switch's prev_state argument needs Linux >= 5.18. A preemption is a
 * switch that leaves prev runnable: `preempt`, or prev_state == TASK_RUNNING
 * (need_resched on the way back to user space, yield). That is the kernel's
 * nonvoluntary_ctxt_switches, except a block aborted by a pending signal,
 * which the kernel counts as voluntary although the task stays runnable.
 *
 * A task switched in without a start (enqueued before we attached, evicted
 * from the LRU) gives no sample rather than a wrong one.
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

/* One task: where it belongs and, while it waits for a CPU, since when. */
struct runqlat_task {
    u64 ts;         /* waiting since (ktime ns); 0: not waiting */
    u64 cgroup_id;  /* its cgroup when last seen */
    u64 generation; /* runqlat_generation when cgroup_id was taken */
};

/* Per cgroup and CPU; the agent sums the CPUs. Checked against
 * agent/probes/runqlat.py (CgroupLeaf) by a test. */
struct runqlat_cgroup {
    u64 slots[VIGIL_LOG2_SLOTS]; /* waits per log2 slot of ns */
    u64 sum_ns;                  /* sum of the waits */
    u64 preemptions;             /* involuntary switches out */
};

BPF_ARRAY(runqlat_config, struct runqlat_config, 1);
/* Thread id -> entry. Removed at the task's last switch; LRU keeps the map
 * bounded whatever else happens (an evicted task is re-read at its wakeup). */
BPF_TABLE("lru_hash", u32, struct runqlat_task, runqlat_tasks, RUNQLAT_MAX_TASKS);
/* Bumped on every cgroup migration: entries of older generations are re-read. */
BPF_ARRAY(runqlat_generation, u64, 1);
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

/* Read before any cgroup id it vouches for: a move after this read bumps it. */
static __always_inline u64 runqlat_current_generation(void)
{
    int zero = 0;
    u64 *generation = runqlat_generation.lookup(&zero), value = generation ? *generation : 0;

    asm volatile("" ::: "memory");
    return value;
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

static __always_inline int runqlat_wakeup(struct task_struct *task)
{
    struct runqlat_task *entry, fresh = {};
    u64 generation, cgroup_id = 0, now;
    u32 tid = 0;

    if (!runqlat_histogram_on())
        return 0;
    VIGIL_READ(tid, task, task_struct__pid);
    if (tid == 0)
        return 0;
    generation = runqlat_current_generation();
    now = bpf_ktime_get_ns();
    entry = runqlat_tasks.lookup(&tid);
    if (entry && entry->generation == generation) {
        entry->ts = now; /* the hot path */
        return 0;
    }
    cgroup_id = vigil_task_cgroup_id(task);
    if (entry) {
        entry->cgroup_id = cgroup_id;
        entry->generation = generation;
        entry->ts = now;
        return 0;
    }
    if (!vigil_selected(VIGIL_PROBE_RUNQLAT, cgroup_id))
        return 0;
    fresh.ts = now;
    fresh.cgroup_id = cgroup_id;
    fresh.generation = generation;
    runqlat_tasks.update(&tid, &fresh);
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

/* prev (current) leaves the CPU: refresh its entry. Returns its cgroup if the
 * switch preempted it (to be counted by the caller), else 0. */
static __always_inline u64 runqlat_switch_out(u32 tid, bool preempt, u32 prev_state,
                                              bool histogram, u64 now)
{
    struct runqlat_task *entry, fresh = {};
    bool runnable = preempt || prev_state == RUNQLAT_TASK_RUNNING;
    u64 generation, cgroup_id;

    if (!runnable && (prev_state & RUNQLAT_TASK_DEAD)) {
        runqlat_tasks.delete(&tid); /* its last switch */
        return 0;
    }
    generation = runqlat_current_generation();
    cgroup_id = bpf_get_current_cgroup_id();
    if (histogram) {
        entry = runqlat_tasks.lookup(&tid);
        if (entry) {
            entry->ts = runnable ? now : 0;
            entry->cgroup_id = cgroup_id;
            entry->generation = generation;
        } else if (vigil_selected(VIGIL_PROBE_RUNQLAT, cgroup_id)) {
            fresh.ts = runnable ? now : 0;
            fresh.cgroup_id = cgroup_id;
            fresh.generation = generation;
            runqlat_tasks.update(&tid, &fresh);
        }
    }
    return runnable && vigil_selected(VIGIL_PROBE_RUNQLAT, cgroup_id) ? cgroup_id : 0;
}

/* next gets the CPU: if it was waiting, returns the wait and sets its cgroup. */
static __always_inline u64 runqlat_switch_in(struct task_struct *next, u64 now, u64 *cgroup_id)
{
    struct runqlat_task *entry;
    u64 wait;
    u32 tid = 0;

    VIGIL_READ(tid, next, task_struct__pid);
    if (tid == 0)
        return 0;
    entry = runqlat_tasks.lookup(&tid);
    if (!entry || entry->ts == 0)
        return 0;
    wait = now > entry->ts ? now - entry->ts : 0;
    entry->ts = 0;
    if (!vigil_selected(VIGIL_PROBE_RUNQLAT, entry->cgroup_id))
        return 0;
    *cgroup_id = entry->cgroup_id;
    return wait | 1ULL << 63; /* a wait of 0 ns is still a sample */
}

static __always_inline void runqlat_record(struct runqlat_cgroup *agg, u64 wait)
{
    u32 slot = vigil_log2_slot(wait);

    if (slot >= VIGIL_LOG2_SLOTS) /* repeated where the verifier can see it */
        slot = VIGIL_LOG2_SLOTS - 1;
    agg->slots[slot] += 1;
    agg->sum_ns += wait;
}

/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
 *          unsigned int prev_state); runs while prev is still current. */
int vigil_runqlat_switch(struct bpf_raw_tracepoint_args *ctx)
{
    u32 prev_tid = (u32)bpf_get_current_pid_tgid();
    bool histogram = runqlat_histogram_on();
    u64 now = bpf_ktime_get_ns(), preempted = 0, waited = 0, wait_cgroup = 0;
    struct runqlat_cgroup *agg = 0;

    if (prev_tid != 0) /* tid 0: this CPU's idle task */
        preempted = runqlat_switch_out(prev_tid, (bool)ctx->args[0], (u32)ctx->args[3],
                                       histogram, now);
    if (histogram)
        waited = runqlat_switch_in((struct task_struct *)ctx->args[2], now, &wait_cgroup);
    if (preempted) {
        agg = runqlat_aggregate(preempted);
        if (agg)
            agg->preemptions += 1;
    }
    if (waited) {
        /* Threads of one cgroup often hand the CPU to each other: one lookup. */
        if (!agg || wait_cgroup != preempted)
            agg = runqlat_aggregate(wait_cgroup);
        if (agg)
            runqlat_record(agg, waited & ~(1ULL << 63));
    }
    return 0;
}

/* TP_PROTO(struct cgroup *dst_cgrp, const char *path, struct task_struct *task,
 *          bool threadgroup): fired once per move, for the leader only. */
int vigil_runqlat_attach(struct bpf_raw_tracepoint_args *ctx)
{
    int zero = 0;
    u64 *generation = runqlat_generation.lookup(&zero);

    if (generation)
        __sync_fetch_and_add(generation, 1);
    return 0;
}

/* A removed cgroup's aggregate is reported once more, then deleted (vigil.h). */
static __always_inline void runqlat_retire(u64 cgroup_id)
{
    u8 one = 1;

    if (runqlat_cgroups.lookup(&cgroup_id) && runqlat_retired.update(&cgroup_id, &one) < 0)
        runqlat_drops.increment(VIGIL_DROP_MAP_FULL);
}
VIGIL_ON_CGROUP_RMDIR(vigil_runqlat_rmdir, runqlat_retire)
