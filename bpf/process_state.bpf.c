/* process_state: how many tasks sit in uninterruptible sleep (D), per cgroup, now.
 *
 *   sched_switch (raw)   prev blocks in TASK_UNINTERRUPTIBLE: remember it, count +1
 *                        prev dies: forget it (and -1 if it was still counted)
 *   sched_wakeup (raw)   a remembered task wakes: forget it, count -1
 *   cgroup_rmdir (raw)   the cgroup's count is retired
 *
 * A task is "in D" exactly as ps(1) says: TASK_UNINTERRUPTIBLE without
 * TASK_NOLOAD (TASK_IDLE kernel threads show as I, not D), and it really
 * blocked: `preempt` switches leave it on the run queue. prev is current at
 * sched_switch, so its tid and cgroup come from cheap helpers; the cgroup is
 * remembered with the task, so the wakeup (in another task's context)
 * decrements the right count without reading the woken task.
 *
 * Counts are per-CPU (no shared cache line): a task may block on one CPU and
 * wake on another, so one CPU's value can be negative; the sum is the count.
 * An entry in process_state_tasks <=> the task is counted: whoever deletes the
 * entry (the wakeup here, or the agent undoing a seed) decrements, so the count
 * moves exactly once each way. The agent seeds tasks already in D at attach
 * time into the same map (agent/probes/process_state.py).
 *
 * Every way out of D goes through try_to_wake_up(), which fires sched_wakeup,
 * so the count only drifts if a wakeup is hidden from tracing (the sandbox
 * this is developed in hides everything its own init threads do): such a
 * task stays counted until it next blocks in D and wakes, or exits.
 */
#include "vigil.h"

#ifndef PROCESS_STATE_MAX_CGROUPS
#define PROCESS_STATE_MAX_CGROUPS 4096
#endif
#ifndef PROCESS_STATE_MAX_TASKS
#define PROCESS_STATE_MAX_TASKS 16384
#endif

/* include/linux/sched.h */
#define PROCESS_STATE_TASK_UNINTERRUPTIBLE 0x2
#define PROCESS_STATE_TASK_DEAD 0x80
#define PROCESS_STATE_TASK_NOLOAD 0x400

/* tid -> cgroup id of tasks in D now. A plain hash, never LRU: an evicted
 * entry would leave its +1 counted forever. */
BPF_HASH(process_state_tasks, u32, u64, PROCESS_STATE_MAX_TASKS);
/* cgroup id -> tasks in D (per CPU; sum the CPUs). */
BPF_PERCPU_HASH(process_state_counts, u64, s64, PROCESS_STATE_MAX_CGROUPS);
/* Cgroups removed since the agent last read: reported once more, then deleted. */
BPF_HASH(process_state_retired, u64, u8, PROCESS_STATE_MAX_CGROUPS);
VIGIL_DROP_COUNTERS(process_state_drops);

static __always_inline void process_state_add(u64 cgroup_id, s64 delta)
{
    s64 zero = 0, *count = process_state_counts.lookup_or_try_init(&cgroup_id, &zero);

    if (count)
        *count += delta;
    else
        process_state_drops.increment(VIGIL_DROP_MAP_FULL);
}

/* The task left D (woke or died): uncount it if it was counted. */
static __always_inline void process_state_forget(u32 tid)
{
    u64 *remembered = process_state_tasks.lookup(&tid), cgroup_id;

    if (!remembered)
        return;
    cgroup_id = *remembered;
    if (process_state_tasks.delete(&tid) == 0) /* we removed it: we uncount it */
        process_state_add(cgroup_id, -1);
}

/* TP_PROTO(bool preempt, struct task_struct *prev, struct task_struct *next,
 *          unsigned int prev_state); Linux >= 5.18. */
int vigil_process_state_switch(struct bpf_raw_tracepoint_args *ctx)
{
    u32 prev_state = (u32)ctx->args[3];
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 cgroup_id;
    long err;

    if (tid == 0 || ctx->args[0] /* preempt: still runnable */)
        return 0;
    if (prev_state & PROCESS_STATE_TASK_DEAD) {
        process_state_forget(tid);
        return 0;
    }
    if ((prev_state & (PROCESS_STATE_TASK_UNINTERRUPTIBLE | PROCESS_STATE_TASK_NOLOAD)) !=
        PROCESS_STATE_TASK_UNINTERRUPTIBLE)
        return 0;
    cgroup_id = bpf_get_current_cgroup_id();
    if (!vigil_selected(VIGIL_PROBE_PROCESS_STATE, cgroup_id))
        return 0;
    err = process_state_tasks.insert(&tid, &cgroup_id);
    if (err == 0)
        process_state_add(cgroup_id, 1);
    else if (err != -EEXIST) /* EEXIST: counted already (seeded by the agent) */
        process_state_drops.increment(VIGIL_DROP_MAP_FULL);
    return 0;
}

int vigil_process_state_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *task = (struct task_struct *)ctx->args[0];
    u32 tid = 0;

    VIGIL_READ(tid, task, task_struct__pid);
    if (tid != 0)
        process_state_forget(tid);
    return 0;
}

/* A removed cgroup's count is reported once more, then deleted (vigil.h). */
static __always_inline void process_state_retire(u64 cgroup_id)
{
    u8 one = 1;

    if (process_state_counts.lookup(&cgroup_id) &&
        process_state_retired.update(&cgroup_id, &one) < 0)
        process_state_drops.increment(VIGIL_DROP_MAP_FULL);
}
VIGIL_ON_CGROUP_RMDIR(vigil_process_state_rmdir, process_state_retire)
