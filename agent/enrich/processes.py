"""The process table: pid -> what the agent knows about that process.

Seeded from /proc at start (so processes older than the agent have names),
then kept current by process.* events. It fills in what an event cannot
carry itself: an exit record has no path, so the table adds the executable
the process exec'd. Bounded: the least recently touched entries go first.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vigil.agent.pipeline.events import Event
from vigil.api.attributes import (
    PROCESS_COMMAND_ARGS,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_EXECUTABLE_PATH,
    PROCESS_PARENT_PID,
    PROCESS_PID,
)
from vigil.api.events import AttributeValue


@dataclass(slots=True)
class ProcessInfo:
    pid: int
    parent_pid: int
    executable_path: str | None = None
    executable_name: str | None = None
    command_args: list[str] | None = None


class ProcessTable:
    def __init__(self, capacity: int = 65536) -> None:
        self.capacity = capacity
        self._table: OrderedDict[int, ProcessInfo] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._table)

    def get(self, pid: int) -> ProcessInfo | None:
        return self._table.get(pid)

    def _put(self, info: ProcessInfo) -> None:
        self._table[info.pid] = info
        self._table.move_to_end(info.pid)
        while len(self._table) > self.capacity:
            self._table.popitem(last=False)
            self.evicted += 1

    def seed_from_proc(self, proc: Path = Path("/proc")) -> int:
        """Read every live process once; processes vanishing meanwhile are skipped."""
        count = 0
        for entry in os.scandir(proc):
            if not entry.name.isdigit():
                continue
            info = _read_proc_entry(Path(entry.path), int(entry.name))
            if info is not None:
                self._put(info)
                count += 1
        return count

    # -- the pipeline stage ----------------------------------------------------

    def process(self, events: list[Event]) -> list[Event]:
        self.observe(events)
        return events

    def flush(self, *, final: bool = False) -> list[Event]:
        return []

    def observe(self, events: Iterable[Event]) -> None:
        """Update the table from process events and fill attributes they lack."""
        for event in events:
            kind = event.kind
            if not kind.startswith("process."):
                continue
            attrs = event.attributes
            pid = attrs.get(PROCESS_PID)
            if not isinstance(pid, int):
                continue
            if kind == "process.exec":
                self._put(
                    ProcessInfo(
                        pid,
                        _int(attrs.get(PROCESS_PARENT_PID)),
                        _str(attrs.get(PROCESS_EXECUTABLE_PATH)),
                        _str(attrs.get(PROCESS_EXECUTABLE_NAME)),
                        _strs(attrs.get(PROCESS_COMMAND_ARGS)),
                    )
                )
            elif kind == "process.fork":
                # A fork runs the parent's image until it execs.
                parent = self._table.get(_int(attrs.get(PROCESS_PARENT_PID)))
                child = ProcessInfo(pid, _int(attrs.get(PROCESS_PARENT_PID)))
                if parent is not None:
                    child.executable_path = parent.executable_path
                    child.executable_name = parent.executable_name
                    child.command_args = parent.command_args
                    self._fill(attrs, parent)
                self._put(child)
            elif kind == "process.exit":
                known = self._table.pop(pid, None)
                if known is not None:
                    self._fill(attrs, known)

    @staticmethod
    def _fill(attrs: dict[str, AttributeValue], info: ProcessInfo) -> None:
        if info.executable_path is not None:
            attrs[PROCESS_EXECUTABLE_PATH] = info.executable_path
        if info.executable_name is not None:
            attrs[PROCESS_EXECUTABLE_NAME] = info.executable_name


def _int(value: object) -> int:
    return value if isinstance(value, int) else 0


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _strs(value: object) -> list[str] | None:
    return value if isinstance(value, list) else None


def _read_proc_entry(path: Path, pid: int) -> ProcessInfo | None:
    try:
        stat = (path / "stat").read_text()
        # comm may hold spaces and parentheses: the state follows the last ")".
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        cmdline = (path / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    try:
        exe: str | None = os.readlink(path / "exe")
    except OSError:
        exe = None  # kernel threads, or not permitted
    args = [a.decode(errors="replace") for a in cmdline.split(b"\0")[:-1]] or None
    if exe is not None:
        name = os.path.basename(exe)
    return ProcessInfo(pid, ppid, exe, name, args)
