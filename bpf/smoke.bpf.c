/* smoke: the smallest vigil probe. One record per exec, carrying the pid and
 * the pid read back through a BTF offset, so a test can prove that the whole
 * path (headers, BTF -D macros, compile, attach, ring buffer) works. */
#include "vigil.h"

struct smoke_event {
    u64 ts;
    u32 pid;      /* from bpf_get_current_pid_tgid() */
    u32 btf_tgid; /* task_struct.tgid read at its BTF offset */
};

BPF_RINGBUF_OUTPUT(smoke_events, 8);
VIGIL_DROP_COUNTERS(smoke_drops);

int vigil_smoke_exec(struct tracepoint__sched__sched_process_exec *args)
{
    struct smoke_event ev = {};
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();

    ev.ts = bpf_ktime_get_ns();
    ev.pid = bpf_get_current_pid_tgid() >> 32;
    VIGIL_READ(ev.btf_tgid, task, task_struct__tgid);
    if (smoke_events.ringbuf_output(&ev, sizeof(ev), 0) < 0)
        smoke_drops.increment(VIGIL_DROP_RINGBUF);
    return 0;
}
