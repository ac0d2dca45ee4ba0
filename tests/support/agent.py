"""Run the real agent in-process and look at what it emitted."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.bpf import require_bpf
from vigil.agent.kernel import mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.runtime import Agent
from vigil.api import attributes
from vigil.api.config import AgentConfig

# Distinct problems kept per sink: enough to name every offending key.
PROBLEMS_KEPT = 50


class CollectingSink:
    """A sink that keeps every event and lets a test wait for the ones it caused.

    It also checks every event's attributes against vigil.api.attributes (key
    registered, value of the registered type): what is wrong is kept, and
    fail_on_attribute_problems() fails the test with it (tests/integration's
    conftest calls it after every test, running() when its agent stops).
    """

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()
        self._problems: dict[str, None] = {}  # ordered, without repeats
        _SINKS.add(self)

    def emit(self, events: Sequence[Event]) -> None:
        with self._changed:
            problems = self._problems
            for event in events:
                if len(problems) >= PROBLEMS_KEPT:
                    break
                for problem in attributes.problems(event.attributes):
                    problems[f"{event.kind} event: {problem}"] = None
            self.events.extend(events)
            self._changed.notify_all()

    def take_attribute_problems(self) -> list[str]:
        """What the events emitted so far carried that the registry does not allow (cleared)."""
        with self._changed:
            found, self._problems = list(self._problems), {}
        return found

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


_SINKS: weakref.WeakSet[CollectingSink] = weakref.WeakSet()


def fail_on_attribute_problems(*sinks: CollectingSink) -> None:
    """Fail when events reaching `sinks` (default: every live CollectingSink) carried a key
    missing from vigil.api.attributes or a value of another type than registered."""
    problems = [
        problem for sink in sinks or list(_SINKS) for problem in sink.take_attribute_problems()
    ]
    if problems:
        raise AssertionError(
            "events carried attributes vigil.api.attributes does not register "
            "(add the key there, or fix the code that wrote it):\n  " + "\n  ".join(problems)
        )


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


def in_cgroup(cgroup: Path, *more: Path) -> Callable[[], None]:
    """A preexec_fn that moves the child into `cgroup` (and `more`) before it execs.

    `more` holds cgroups of other hierarchies (a cgroup v1 memory cgroup).
    """
    procs = [path / "cgroup.procs" for path in (cgroup, *more)]

    def move() -> None:
        for path in procs:
            path.write_text(str(os.getpid()))

    return move


def spawn(
    args: Sequence[str],
    *,
    cgroup: Path | None = None,
    also_in: Sequence[Path] = (),
    **kwargs: object,
) -> subprocess.Popen[bytes]:
    """Start `args`; the child joins `cgroup` and the cgroups `also_in` before exec."""
    executable = args[0] if os.path.isabs(args[0]) else shutil.which(args[0])
    assert executable
    assert cgroup or not also_in, "also_in needs a cgroup v2 `cgroup`"
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [executable, *args[1:]],
        # Runs between fork and exec: a write(2) per cgroup, safe enough in a threaded test process.
        preexec_fn=in_cgroup(cgroup, *also_in) if cgroup else None,  # noqa: PLW1509
        **kwargs,
    )


MEMORY_V1_ROOT = Path("/sys/fs/cgroup/memory")


def _memcg_v1_mountable() -> bool:
    """Whether this kernel can mount the v1 memory controller at all (CONFIG_MEMCG_V1)."""
    with tempfile.TemporaryDirectory() as where:
        done = subprocess.run(
            ["mount", "-t", "cgroup", "-o", "memory", "vigil-probe", where],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            subprocess.run(["umount", where], check=False)
            return True
        return False


@contextmanager
def memory_cgroup_v1(limit_bytes: int) -> Iterator[Path]:
    """A fresh cgroup v1 memory cgroup limited to `limit_bytes`, swap included.

    The memory controller is bound to cgroup v1 on the project's machines:
    an OOM kill needs a limit here (a scratch_cgroup() has no memory.max).
    """
    # Debian 6.12 and later build without CONFIG_MEMCG_V1 (make test-kernels):
    # these tests limit a v1 memory cgroup, which such a kernel cannot mount.
    # TODO(kernels): a cgroup v2 memory.max variant, so OOM kills run there too.
    if not (MEMORY_V1_ROOT / "memory.limit_in_bytes").exists() and not _memcg_v1_mountable():
        pytest.skip(
            f"not supported on {os.uname().release}: no cgroup v1 memory controller "
            "(CONFIG_MEMCG_V1 off); these OOM tests limit a v1 memory cgroup"
        )
    assert (MEMORY_V1_ROOT / "memory.limit_in_bytes").exists(), "no cgroup v1 memory controller"
    path = MEMORY_V1_ROOT / f"vigil-test-{uuid.uuid4().hex[:12]}"
    path.mkdir()
    try:
        (path / "memory.limit_in_bytes").write_text(str(limit_bytes))
        memsw = path / "memory.memsw.limit_in_bytes"  # only with swap accounting
        if memsw.exists():
            memsw.write_text(str(limit_bytes))  # no escape into swap either
        yield path
    finally:
        _remove_cgroup(path)


@contextmanager
def running(config: AgentConfig, probes: Sequence[str]) -> Iterator[tuple[Agent, CollectingSink]]:
    """The real agent running `probes`, collecting what it emits; stopped on exit."""
    require_bpf()
    sink = CollectingSink()
    agent = Agent(config, sinks=[sink], probes=list(probes))
    agent.start()
    try:
        yield agent, sink
    finally:
        agent.stop()
    fail_on_attribute_problems(sink)  # the last events come at stop
