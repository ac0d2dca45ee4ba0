/* The tests' second opinion on run-queue latency, written another way on purpose:
 * per task (pid keys, a plain hash), tasks picked by comm (ORACLE_COMM, the
 * workload), no cgroups, no shared code with bpf/runqlat.bpf.c. A task waits
 * from its wakeup, or from a switch that leaves it runnable, until it is
 * switched in; a start left by a wakeup while it still ran ends when it blocks.
 *
 * Raw tracepoints like the probe, not classic ones: classic tracepoint
 * programs share one per-CPU recursion guard with every other classic/kprobe
 * program on the machine (bpf_prog_active), so a timer wakeup in an interrupt
 * that lands inside anyone's program is silently skipped; raw tracepoint
 * programs only guard against themselves.
 */
#include "vigil.h"

#define ORACLE_TASKS 1024

struct oracle_task {
    u64 ins;     /* times switched in */
    u64 wait_ns; /* summed waits of the switch-ins that had a start */
    u64 waits;   /* switch-ins that had a start */
};

BPF_HASH(oracle_start, u32, u64, ORACLE_TASKS);
BPF_HASH(oracle_tasks, u32, struct oracle_task, ORACLE_TASKS);

static __always_inline bool oracle_is_workload(struct task_struct *task)
{
    const char want[] = ORACLE_COMM;
    char comm[VIGIL_COMM_LEN] = {};

    VIGIL_READ(comm, task, task_struct__comm);
#pragma unroll
    for (int i = 0; i < sizeof(want); i++)
        if (comm[i] != want[i])
            return false;
    return true;
}

static __always_inline u32 oracle_pid(struct task_struct *task)
{
    u32 pid = 0;
    VIGIL_READ(pid, task, task_struct__pid);
    return pid;
}

static __always_inline int oracle_enqueue(struct task_struct *task)
{
    u64 now = bpf_ktime_get_ns();
    u32 pid;

    if (!oracle_is_workload(task))
        return 0;
    pid = oracle_pid(task);
    oracle_start.update(&pid, &now);
    return 0;
}

int oracle_wakeup(struct bpf_raw_tracepoint_args *ctx)
{
    return oracle_enqueue((struct task_struct *)ctx->args[0]);
}

int oracle_switch(struct bpf_raw_tracepoint_args *ctx)
{
    struct task_struct *prev = (struct task_struct *)ctx->args[1];
    struct task_struct *next = (struct task_struct *)ctx->args[2];
    struct oracle_task zero = {}, *task;
    u64 *start, now = bpf_ktime_get_ns();
    u32 pid;

    if (ctx->args[0] /* preempt */ || (u32)ctx->args[3] == 0 /* TASK_RUNNING */) {
        oracle_enqueue(prev);
    } else if (oracle_is_workload(prev)) {
        pid = oracle_pid(prev);
        oracle_start.delete(&pid); /* it blocks: only a wakeup starts a wait now */
    }
    if (!oracle_is_workload(next))
        return 0;
    pid = oracle_pid(next);
    task = oracle_tasks.lookup_or_try_init(&pid, &zero);
    if (!task)
        return 0;
    task->ins += 1;
    start = oracle_start.lookup(&pid);
    if (start) {
        task->wait_ns += now - *start;
        task->waits += 1;
        oracle_start.delete(&pid);
    }
    return 0;
}
