"""The whole kernel path in miniature: headers, BTF macros, compile, attach, ring buffer."""

from __future__ import annotations

import ctypes
import struct
import subprocess

import pytest

from vigil.agent.kernel import compiler

pytestmark = pytest.mark.bpf


def test_smoke_program_reads_exactly_that_exec() -> None:
    module = compiler.compile_sources(
        [compiler.bpf_source("smoke.bpf.c")], members=["task_struct.tgid"]
    )
    records: list[bytes] = []
    try:
        bpf = module.bpf
        bpf.attach_tracepoint(tp=b"sched:sched_process_exec", fn_name=b"vigil_smoke_exec")
        bpf[b"smoke_events"].open_ring_buffer(
            lambda _ctx, data, size: records.append(ctypes.string_at(data, size))
        )
        child = subprocess.Popen(["/bin/true"])
        child.wait()
        bpf.ring_buffer_poll(200)
        bpf.ring_buffer_consume()
    finally:
        module.close()

    decoded = [struct.unpack("<QII", record) for record in records]
    ours = [(pid, tgid) for _ts, pid, tgid in decoded if pid == child.pid]
    # The pid from the helper and the tgid read at its BTF offset agree.
    assert ours == [(child.pid, child.pid)]


def test_compile_error_carries_clang_diagnostics(tmp_path: object) -> None:
    with pytest.raises(compiler.CompileError) as failure:
        compiler.compile_sources([compiler.bpf_source("smoke.bpf.c")], members=[])
    # Without the BTF macro the program cannot compile, and clang says why.
    assert "VIGIL_OFF_task_struct__tgid" in str(failure.value) or "VIGIL_SIZE" in str(failure.value)
