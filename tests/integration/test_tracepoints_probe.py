"""The tracepoints probe against the running kernel: generated programs, real events, exact values.

Each test starts the real agent with subscriptions in its config, causes the
kernel activity itself (a signal to a child it owns, forks and execs in a
cgroup it made) and checks the decoded values against what it knows.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CollectingSink, running, scratch_cgroup, spawn
from tests.support.bpf import require_bpf
from vigil.agent.kernel import btf, compiler, tracepoint_formats
from vigil.agent.pipeline.events import Event
from vigil.agent.probes import tracepoint_gen
from vigil.agent.probes.tracepoints import EVENTS, TracepointsProbe
from vigil.agent.runtime import Agent
from vigil.api.config import AgentConfig, parse_text
from vigil.api.probes.tracepoints import Subscription

pytestmark = pytest.mark.bpf

SIGNAL = "tracepoint.signal.signal_generate"


def _config(*subscriptions: dict[str, Any]) -> AgentConfig:
    return AgentConfig.model_validate(
        {"probes": {"tracepoints": {"enabled": True, "subscriptions": list(subscriptions)}}}
    )


def _signals_to(pid: int) -> Any:
    def predicate(event: Event) -> bool:
        return event.kind == SIGNAL and event.attributes.get("vigil.tracepoint.pid") == pid

    return predicate


def test_signal_to_a_child_is_one_event_with_its_number_and_pid() -> None:
    config = _config({"tracepoint": "signal:signal_generate", "fields": ["sig", "pid"]})
    with running(config, ["tracepoints"]) as (_agent, sink):
        child = subprocess.Popen(["sleep", "30"])
        try:
            os.kill(child.pid, signal.SIGUSR1)  # sleep's default action: terminate
            assert child.wait(timeout=10) == -signal.SIGUSR1
            events = sink.wait_for(_signals_to(child.pid))
            time.sleep(0.3)  # nothing more comes for this pid
            events = sink.matching(_signals_to(child.pid))
        finally:
            child.kill()
    assert len(events) == 1
    attrs = events[0].attributes
    assert attrs["vigil.tracepoint.sig"] == signal.SIGUSR1 == 10
    assert attrs["vigil.tracepoint.pid"] == child.pid
    assert attrs["process.pid"] == os.getpid()  # the sender: this test
    assert set(attrs) >= {"thread.id", "thread.name", "vigil.cgroup.id"}
    assert not {k for k in attrs if k.startswith("vigil.tracepoint.")} - {
        "vigil.tracepoint.sig",
        "vigil.tracepoint.pid",
    }


def test_filter_drops_in_the_kernel() -> None:
    # sig == 9: the USR1 never reaches the ring buffer; the KILL that follows does,
    # which shows the program ran and the pipeline was alive meanwhile.
    config = _config(
        {"tracepoint": "signal:signal_generate", "fields": ["sig", "pid"], "filter": "sig == 9"}
    )
    with running(config, ["tracepoints"]) as (agent, sink):
        child = subprocess.Popen(["sh", "-c", "trap '' USR1; sleep 30"])
        time.sleep(0.3)  # the trap is set
        os.kill(child.pid, signal.SIGUSR1)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        seen = sink.wait_for(_signals_to(child.pid))
        time.sleep(0.3)
        seen = sink.matching(_signals_to(child.pid))
        every_signal = sink.matching(lambda e: e.kind == SIGNAL)
        received = agent.counters()["tracepoints"]["received"]
    assert [e.attributes["vigil.tracepoint.sig"] for e in seen] == [signal.SIGKILL]
    # Every record that crossed the ring buffer passed the filter.
    assert {e.attributes["vigil.tracepoint.sig"] for e in every_signal} == {9}
    assert received == len(every_signal)


def test_fork_count_per_cgroup_equals_the_forks_made_there() -> None:
    forks = 37
    config = _config({"tracepoint": "sched:sched_process_fork", "mode": "count"})
    with running(config, ["tracepoints"]) as (agent, _sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        # Each /bin/true is one fork of the shell, inside the cgroup; `wait` keeps
        # the last one from being exec'd in place of the shell.
        script = f"for i in $(seq {forks}); do /bin/true; done; wait"
        # seq runs in a subshell: one more fork, plus seq's own exec.
        assert spawn(["sh", "-c", script], cgroup=cgroup).wait(timeout=60) == 0
        probe = agent.probes["tracepoints"]
        assert isinstance(probe, TracepointsProbe)
        counts = probe.counts(probe.plans[0])
        points = [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]
    assert counts[(cgroup_id,)] == forks + 1
    assert len(points) == 1
    assert points[0].spec == EVENTS
    assert points[0].value == forks + 1
    assert points[0].attributes["vigil.subscription.tracepoint"] == "sched:sched_process_fork"


def test_histogram_of_a_field_per_cgroup() -> None:
    # sched_process_fork's child_pid: every value is a pid the test saw.
    config = _config(
        {"tracepoint": "sched:sched_process_fork", "mode": "histogram", "field": "child_pid"}
    )
    with running(config, ["tracepoints"]) as (agent, _sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        child = spawn(
            ["sh", "-c", "/bin/true & echo $!; wait"], cgroup=cgroup, stdout=subprocess.PIPE
        )
        out, _ = child.communicate(timeout=30)
        probe = agent.probes["tracepoints"]
        assert isinstance(probe, TracepointsProbe)
        histogram = probe.histograms(probe.plans[0])[cgroup_id]
    pid = int(out)
    assert histogram.count == 1
    assert histogram.sum == pid
    assert histogram.counts[(pid - 1).bit_length()] == 1


def test_data_loc_string_decodes_to_the_exact_path(tmp_path: Path) -> None:
    program = tmp_path / ("a-rather-long-executable-name-" + "x" * 40)
    shutil.copy("/bin/true", program)
    config = _config(
        {
            "tracepoint": "sched:sched_process_exec",
            "fields": ["filename", "pid"],
            "limits": {"stringBytes": 512},
        }
    )
    with running(config, ["tracepoints"]) as (_agent, sink), scratch_cgroup() as cgroup:
        cgroup_id = cgroup.stat().st_ino
        child = spawn([str(program)], cgroup=cgroup)
        assert child.wait(timeout=10) == 0
        events = sink.wait_for(
            lambda e: (
                e.kind == "tracepoint.sched.sched_process_exec"
                and e.attributes["vigil.tracepoint.pid"] == child.pid
            )
        )
    assert len(events) == 1
    assert events[0].attributes["vigil.tracepoint.filename"] == str(program)
    assert len(str(program)) > 64  # beyond the default stringBytes
    assert events[0].attributes["vigil.cgroup.id"] == cgroup_id


def test_string_filter_prefix_in_the_kernel(tmp_path: Path) -> None:
    inside = tmp_path / "inside"
    inside.mkdir()
    shutil.copy("/bin/true", inside / "yes")
    shutil.copy("/bin/true", tmp_path / "no")
    config = _config(
        {
            "tracepoint": "sched:sched_process_exec",
            "fields": ["filename", "pid"],
            "filter": f'filename.startsWith("{inside}/") && !(pid in [1, 2])',
            "limits": {"stringBytes": 256},
        }
    )
    with running(config, ["tracepoints"]) as (_agent, sink), scratch_cgroup() as cgroup:
        spawn([str(tmp_path / "no")], cgroup=cgroup).wait(timeout=10)
        yes = spawn([str(inside / "yes")], cgroup=cgroup)
        yes.wait(timeout=10)
        sink.wait_for(lambda e: e.attributes.get("vigil.tracepoint.pid") == yes.pid)
        time.sleep(0.3)
        seen = sink.matching(lambda e: e.kind == "tracepoint.sched.sched_process_exec")
    assert [e.attributes["vigil.tracepoint.filename"] for e in seen] == [str(inside / "yes")]


def test_invalid_subscriptions_are_reported_and_the_others_run() -> None:
    config = _config(
        {"tracepoint": "signal:signal_generat", "fields": ["sig"]},
        {"tracepoint": "signal:signal_generate", "fields": ["sgi"]},
        {"tracepoint": "signal:signal_generate", "fields": ["sig", "pid"]},
    )
    with running(config, ["tracepoints"]) as (agent, sink):
        probe = agent.probes["tracepoints"]
        assert isinstance(probe, TracepointsProbe)
        child = subprocess.Popen(["sleep", "30"])
        child.kill()
        child.wait()
        assert sink.wait_for(_signals_to(child.pid))
    assert "close matches: signal:signal_generate" in probe.problems[0]
    assert (
        "has no field 'sgi'; its fields: sig, errno, code, comm, pid, group, result"
        in (probe.problems[1])
    )
    assert set(probe.problems) == {0, 1}


def _hundred_tracepoints() -> list[tracepoint_formats.TracepointFormat]:
    """100 tracepoints of this kernel spread over the sorted list (deterministic)."""
    names = [
        n for n in tracepoint_formats.available() if not n.startswith(("syscalls:", "ftrace:"))
    ]
    stride = max(1, len(names) // 100)
    return [tracepoint_formats.load(name) for name in names[::stride][:100]]


def _varied(index: int, fmt: tracepoint_formats.TracepointFormat) -> Subscription:
    """Stream, count and histogram in turn; a filter on a numeric field where there is one."""
    numeric = [f.name for f in fmt.own_fields if f.numeric]
    base: dict[str, Any] = {"tracepoint": fmt.name, "limits": {"fields": 64}}
    if numeric:
        base["filter"] = f"{numeric[0]} != 3 || {numeric[0]} in [3, 4]"
        if index % 3 == 1:
            return Subscription.model_validate({**base, "mode": "count", "by": numeric[:2]})
        if index % 3 == 2:
            return Subscription.model_validate({**base, "mode": "histogram", "field": numeric[-1]})
    return Subscription.model_validate(base)


def test_generated_programs_of_a_hundred_tracepoints_compile_and_load() -> None:
    require_bpf()
    from bcc import BPF

    formats = _hundred_tracepoints()
    assert len(formats) == 100
    reader = btf.load_vmlinux()
    plans = [tracepoint_gen.plan(i, _varied(i, fmt), fmt, reader) for i, fmt in enumerate(formats)]
    loaded = []
    for start in (0, 50):
        chunk = plans[start : start + 50]
        workdir = Path(os.environ.get("TMPDIR", "/tmp"))
        source = tracepoint_gen.write(chunk, workdir / f"vigil-hundred-{os.getpid()}-{start}")
        module = compiler.compile_sources(
            compiler.module_sources([str(source)]), members=TracepointsProbe.members
        )
        try:
            for plan in chunk:
                function = module.bpf.load_func(plan.function.encode(), BPF.TRACEPOINT)
                assert function.fd >= 0
                loaded.append(plan.format.name)
        finally:
            module.close()
            source.unlink()
    assert len(loaded) == 100
    modes = {p.subscription.mode for p in plans}
    assert modes == {"stream", "count", "histogram"}


def test_subscriptions_added_and_removed_live_lose_no_process_event(tmp_path: Path) -> None:
    import yaml

    exec_sub = {"tracepoint": "sched:sched_process_exec", "fields": ["filename", "pid"]}
    fork_sub = {"tracepoint": "sched:sched_process_fork", "mode": "count"}

    def text(*subs: dict[str, Any]) -> str:
        tracepoints = {"enabled": bool(subs), "subscriptions": list(subs)}
        return yaml.safe_dump({"probes": {"process": {}, "tracepoints": tracepoints}})

    require_bpf()
    sink = CollectingSink()
    agent = Agent(parse_text(text(), source="test"), sinks=[sink])  # probes from the config
    agent.start()
    with contextlib.ExitStack() as stack:
        stack.callback(agent.stop)
        cgroup = stack.enter_context(scratch_cgroup())
        cgroup_id = cgroup.stat().st_ino
        stop = tmp_path / "stop"
        script = f"i=0; while [ ! -e {stop} ]; do /bin/true live; i=$((i+1)); done; echo $i"
        storm = spawn(["sh", "-c", script], cgroup=cgroup, stdout=subprocess.PIPE)

        def execs() -> list[Event]:
            return sink.matching(
                lambda e: (
                    e.kind == "process.exec" and e.attributes.get("process.parent_pid") == storm.pid
                )
            )

        def traced() -> list[Event]:
            return sink.matching(
                lambda e: (
                    e.kind == "tracepoint.sched.sched_process_exec"
                    and e.attributes["vigil.cgroup.id"] == cgroup_id
                )
            )

        _wait(lambda: len(execs()) >= 50)
        assert agent.reload_text(text(exec_sub))
        assert "tracepoints" in agent.probes
        _wait(lambda: len(traced()) >= 20)
        assert agent.reload_text(text(exec_sub, fork_sub))  # recompiled, the old one retired
        probe = agent.probes["tracepoints"]
        assert isinstance(probe, TracepointsProbe)
        assert len(probe.plans) == 2
        _wait(lambda: probe.counts(probe.plans[1]).get((cgroup_id,), 0) >= 20)
        assert agent.reload_text(text())
        assert "tracepoints" not in agent.probes
        after_removal = len(traced())
        time.sleep(0.5)  # execs after the removal too
        stop.touch()
        out, _ = storm.communicate(timeout=60)
        count = int(out)
        _wait(lambda: len({e.attributes["process.pid"] for e in execs()}) == count, timeout=30)
        time.sleep(0.3)
        assert len(traced()) <= after_removal + 5  # only what was in flight at the removal
        assert {e.attributes["vigil.tracepoint.filename"] for e in traced()} == {"/bin/true"}
        assert agent.config_counters == {"reloads": 3, "rejected": 0}


def _wait(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_read_user_string_of_a_syscall_argument(tmp_path: Path) -> None:
    # syscalls:* taxes every syscall while attached: kept short.
    target = tmp_path / "opened-by-the-test"
    target.write_text("x")
    config = _config(
        {
            "tracepoint": "syscalls:sys_enter_openat",
            "fields": ["filename", "flags"],
            "readUser": ["filename"],
            "filter": f'filename == "{target}"',
            "limits": {"stringBytes": 256},
        },
        {"tracepoint": "syscalls:sys_enter_openat", "fields": ["filename"]},
    )
    with running(config, ["tracepoints"]) as (_agent, sink):
        with open(target) as handle:  # openat is the point
            handle.read()
        events = sink.wait_for(
            lambda e: e.attributes.get("vigil.tracepoint.filename") == str(target)
        )
        raw = sink.wait_for(
            lambda e: (
                e.attributes.get("process.pid") == os.getpid()
                and isinstance(e.attributes.get("vigil.tracepoint.filename"), int)
            )
        )
    assert len(events) == 1
    assert events[0].attributes["process.pid"] == os.getpid()
    assert events[0].attributes["vigil.tracepoint.flags"] == os.O_RDONLY | os.O_CLOEXEC
    assert raw[0].attributes["vigil.tracepoint.filename"] > 0  # the address, not read


def test_cli_lists_and_describes_tracepoints(capsys: pytest.CaptureFixture[str]) -> None:
    from vigil.agent.cli import main

    assert main(["tracepoints", "--filter", "signal:signal_gen"]) == 0
    assert capsys.readouterr().out.split() == ["signal:signal_generate"]
    assert main(["tracepoints", "sched:sched_process_exec"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[:3] == ["filename", "__data_loc", "char[]"]
    assert main(["tracepoints", "sched:sched_proces_exec"]) == 2


def test_readme_subscriptions_plan_on_this_kernel() -> None:
    import re

    import yaml

    from vigil.api.config import parse_config

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### The `tracepoints` probe") :]
    match = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert match is not None
    config = parse_config(yaml.safe_load(match.group(1)))
    reader = btf.load_vmlinux()
    subs = config.probes.tracepoints.subscriptions
    plans = [
        tracepoint_gen.plan(i, sub, tracepoint_formats.load(sub.tracepoint), reader)
        for i, sub in enumerate(subs)
    ]
    assert [p.subscription.mode for p in plans] == ["stream", "count", "histogram"]


def test_rate_limit_keeps_the_first_events_and_counts_the_rest() -> None:
    # The budget is per CPU and per second: the test pins itself to one CPU and
    # sends its 50 signals well within a second; the filter (before the limit)
    # keeps other senders' signals out of this subscription's budget.
    sent, limit = 50, 5
    child = subprocess.Popen(["sh", "-c", "trap '' USR1; sleep 30"])
    time.sleep(0.3)  # the trap is set
    config = _config(
        {
            "tracepoint": "signal:signal_generate",
            "fields": ["sig", "pid"],
            "filter": f"pid == {child.pid} && sig == 10",
            "rateLimit": limit,
        }
    )
    affinity = os.sched_getaffinity(0)
    try:
        with running(config, ["tracepoints"]) as (agent, sink):
            os.sched_setaffinity(0, {min(affinity)})
            for _ in range(sent):
                os.kill(child.pid, signal.SIGUSR1)
            os.sched_setaffinity(0, affinity)
            sink.wait_for(_signals_to(child.pid), count=limit)
            time.sleep(0.3)
            events = sink.matching(_signals_to(child.pid))
            probe = agent.probes["tracepoints"]
            assert isinstance(probe, TracepointsProbe)
            probe.read_kernel_drops()
            limited = probe.rate_limited[0]
            dropped = agent.counters()["tracepoints"]["dropped_kernel"]
    finally:
        os.sched_setaffinity(0, affinity)
        child.kill()
        child.wait()
    assert len(events) == limit
    assert limited == sent - limit
    assert dropped == sent - limit  # exported as the probe's kernel drops


def test_removed_cgroup_is_reported_once_more_then_forgotten() -> None:
    config = _config({"tracepoint": "sched:sched_process_fork", "mode": "count"})
    with running(config, ["tracepoints"]) as (agent, _sink):
        probe = agent.probes["tracepoints"]
        assert isinstance(probe, TracepointsProbe)
        with scratch_cgroup() as cgroup:
            cgroup_id = cgroup.stat().st_ino
            script = "/bin/true; /bin/true; /bin/true; wait"
            assert spawn(["sh", "-c", script], cgroup=cgroup).wait(timeout=30) == 0
        # The directory is gone: its count is in the next collect, then no more.

        def points() -> list[Any]:
            return [p for p in probe.collect() if p.attributes["vigil.cgroup.id"] == cgroup_id]

        last = points()
        again = points()
    assert [p.value for p in last] == [3]
    assert again == []
    assert (cgroup_id,) not in probe.counts(probe.plans[0])
