/* The floor for bench/syscalls.py: an empty program on raw_syscalls:sys_enter.
 * What remains is the cost of the syscall-tracing slow path and the
 * tracepoint dispatch, which every raw_syscalls consumer pays. */
int bench_syscall_empty(struct bpf_raw_tracepoint_args *ctx)
{
    return 0;
}
