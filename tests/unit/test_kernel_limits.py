"""What older kernels lack, read from BTF: the answers `make test-kernels` found on 5.10."""

from __future__ import annotations

from tests.support.btf_builder import BTFBuilder
from vigil.agent.kernel import btf, limits


def kernel(*, sched_switch_args: int, task_storage: bool) -> btf.BTF:
    b = BTFBuilder()
    u32 = b.int_("unsigned int", 4)
    void_ptr = b.ptr(0)
    params = [("", void_ptr)] + [("", u32)] * sched_switch_args
    b.typedef("btf_trace_sched_switch", b.ptr(b.func_proto(0, params)))
    b.func("__x64_sys_accept4", b.func_proto(0, []))
    values = [("BPF_MAP_TYPE_UNSPEC", 0), ("BPF_MAP_TYPE_RINGBUF", 27)]
    if task_storage:
        values.append(("BPF_MAP_TYPE_TASK_STORAGE", 29))
    b.enum("bpf_map_type", values)
    helpers = [("BPF_FUNC_unspec", 0)] + ([("BPF_FUNC_task_pt_regs", 175)] if task_storage else [])
    b.enum("bpf_func_id", helpers)
    return btf.BTF.from_bytes(b.build())


def test_a_5_10_like_kernel_lacks_prev_state_and_task_storage() -> None:
    reader = kernel(sched_switch_args=3, task_storage=False)
    assert reader.typedef_proto_arity("btf_trace_sched_switch") == 4
    assert reader.typedef_proto_arity("btf_trace_nothing") is None
    assert reader.has_typedef("btf_trace_sched_switch")
    assert reader.has_function("__x64_sys_accept4")
    assert not reader.has_function("__x64_sys_accept")
    assert reader.has_enumerator("BPF_MAP_TYPE_RINGBUF")
    assert not reader.has_enumerator("BPF_MAP_TYPE_TASK_STORAGE")
    assert limits.probe_limits("runqlat", reader) == [
        "sched_switch passes no prev_state before Linux 5.18 (raw tracepoint has 3 arguments)"
    ]
    assert limits.probe_limits("process_state", reader) == limits.probe_limits("runqlat", reader)
    assert limits.probe_limits("syscalls", reader)[0].startswith("no BPF task storage")
    assert limits.probe_limits("syscalls", reader, latency=False) == [
        "no bpf_task_pt_regs before Linux 5.15 (count-only syscalls need it)"
    ]
    assert limits.probe_limits("process", reader) == []


def test_a_5_18_like_kernel_lacks_nothing() -> None:
    reader = kernel(sched_switch_args=4, task_storage=True)
    for probe in ("runqlat", "process_state", "syscalls", "process", "tcp", "oom"):
        assert limits.probe_limits(probe, reader) == []
    assert limits.probe_limits("syscalls", reader, latency=False) == []
