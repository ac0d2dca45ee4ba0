"""Run the real agent in-process and look at what it emitted."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from vigil.agent.kernel import mounts
from vigil.agent.pipeline.events import Event


class CollectingSink:
    """A sink that keeps every event and lets a test wait for the ones it caused."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()

    def emit(self, events: Sequence[Event]) -> None:
        with self._changed:
            self.events.extend(events)
            self._changed.notify_all()

    def close(self) -> None:
        pass

    def matching(self, predicate: Callable[[Event], bool]) -> list[Event]:
        with self._changed:
            return [event for event in self.events if predicate(event)]

    def wait_for(
        self, predicate: Callable[[Event], bool], *, count: int = 1, timeout: float = 10.0
    ) -> list[Event]:
        """Events matching `predicate` once at least `count` arrived (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [event for event in self.events if predicate(event)]
                remaining = deadline - time.monotonic()
                if len(found) >= count or remaining <= 0:
                    return found
                self._changed.wait(min(remaining, 0.1))


def of_pid(pid: int, kind: str | None = None) -> Callable[[Event], bool]:
    def predicate(event: Event) -> bool:
        return event.attributes.get("process.pid") == pid and (kind is None or event.kind == kind)

    return predicate


@contextmanager
def scratch_cgroup() -> Iterator[Path]:
    """A fresh cgroup v2 directory (its inode number is its cgroup id)."""
    root = mounts.cgroup2_root()
    assert root is not None, "no cgroup v2 mount"
    path = root / f"vigil-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        yield path
    finally:
        _remove_cgroup(path)


def _remove_cgroup(path: Path) -> None:
    for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
        _rmdir_when_empty(child)
    _rmdir_when_empty(path)


def _rmdir_when_empty(path: Path) -> None:
    deadline = time.monotonic() + 5
    while True:
        try:
            path.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def in_cgroup(cgroup: Path) -> Callable[[], None]:
    """A preexec_fn that moves the child into `cgroup` before it execs."""
    procs = cgroup / "cgroup.procs"

    def move() -> None:
        procs.write_text(str(os.getpid()))

    return move


def spawn(
    args: Sequence[str], *, cgroup: Path | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    executable = args[0] if os.path.isabs(args[0]) else shutil.which(args[0])
    assert executable
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [executable, *args[1:]],
        # Runs between fork and exec: one write(2), safe enough in a threaded test process.
        preexec_fn=in_cgroup(cgroup) if cgroup else None,  # noqa: PLW1509
        **kwargs,
    )
