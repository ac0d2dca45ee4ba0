from __future__ import annotations

import os

from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.pipeline.events import Event


def test_seed_from_proc_knows_this_process() -> None:
    table = ProcessTable()
    assert table.seed_from_proc() > 1
    me = table.get(os.getpid())
    assert me is not None
    assert me.parent_pid == os.getppid()
    assert me.executable_path == os.readlink("/proc/self/exe")


def _exec(pid: int, path: str) -> Event:
    return Event(
        "process.exec",
        1,
        {
            "process.pid": pid,
            "process.parent_pid": 1,
            "process.executable.path": path,
            "process.executable.name": path.rsplit("/", 1)[-1],
            "process.command_args": [path],
        },
    )


def test_exit_gets_the_exec_path_and_leaves_the_table() -> None:
    table = ProcessTable()
    table.observe([_exec(10, "/bin/app")])
    exit_event = Event(
        "process.exit", 2, {"process.pid": 10, "process.executable.name": "app-comm"}
    )
    table.observe([exit_event])
    assert exit_event.attributes["process.executable.path"] == "/bin/app"
    assert exit_event.attributes["process.executable.name"] == "app"
    assert table.get(10) is None


def test_fork_inherits_the_parent_image() -> None:
    table = ProcessTable()
    table.observe([_exec(10, "/bin/srv")])
    fork = Event("process.fork", 2, {"process.pid": 11, "process.parent_pid": 10})
    table.observe([fork])
    assert fork.attributes["process.executable.path"] == "/bin/srv"
    child = table.get(11)
    assert child is not None
    assert child.executable_path == "/bin/srv"


def test_capacity_bounds_memory() -> None:
    table = ProcessTable(capacity=128)
    table.observe(
        Event("process.fork", 1, {"process.pid": pid, "process.parent_pid": 1})
        for pid in range(1000)
    )
    assert len(table) == 128
    assert table.evicted == 872
    assert table.get(999) is not None
    assert table.get(0) is None
