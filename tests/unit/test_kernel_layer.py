"""Header resolution, mount discovery, capabilities and tracepoint checks, on fake trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.agent.kernel import capabilities, features, headers, mounts


def _tree(root: Path) -> Path:
    (root / "include/linux").mkdir(parents=True)
    (root / "include/linux/kconfig.h").write_text("")
    return root


def _resolve_in(tmp_path: Path) -> headers.HeaderTree:
    """Resolve with every place inside tmp_path: release 6.18.0, no env override."""
    return headers.resolve_headers(
        release="6.18.0",
        env={},
        prepared=tmp_path / "prepared",
        kheaders=tmp_path / "none.tar.xz",
        modules_root=tmp_path / "modules",
    )


def test_headers_prefer_the_host_tree(tmp_path: Path) -> None:
    host = _tree(tmp_path / "modules/6.18.0/build")
    _tree(tmp_path / "prepared")
    assert _resolve_in(tmp_path) == headers.HeaderTree(host, "host")


def test_headers_fall_back_to_the_prepared_tree(tmp_path: Path) -> None:
    prepared = _tree(tmp_path / "prepared")
    assert _resolve_in(tmp_path) == headers.HeaderTree(prepared, "prepared")


def test_headers_env_override_wins(tmp_path: Path) -> None:
    chosen = _tree(tmp_path / "mine")
    tree = headers.resolve_headers(
        release="x",
        env={"VIGIL_KERNEL_HEADERS": str(chosen)},
        prepared=tmp_path / "p",
        kheaders=tmp_path / "k",
        modules_root=tmp_path / "m",
    )
    assert tree.source == "env"


def test_missing_headers_name_every_place_tried(tmp_path: Path) -> None:
    with pytest.raises(headers.HeadersNotFound) as failure:
        headers.resolve_headers(
            release="6.18.0",
            env={"VIGIL_KERNEL_HEADERS": "/nope"},
            prepared=tmp_path / "prepared",
            kheaders=tmp_path / "kheaders.tar.xz",
            modules_root=tmp_path / "modules",
        )
    message = str(failure.value)
    for place in (
        "/nope",
        "modules/6.18.0/build",
        "modules/6.18.0/source",
        "kheaders.tar.xz",
        "prepared",
    ):
        assert place in message


MOUNTINFO = """\
22 28 0:21 / /sys rw,nosuid - sysfs sysfs rw
31 22 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 22 0:12 / /sys/kernel/tracing rw,relatime - tracefs nodev rw
60 28 0:50 / /mnt/with\\040space rw - ext4 /dev/sda1 rw
"""


def test_mountinfo_parsing(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(MOUNTINFO)
    assert mounts.cgroup2_root(info) == Path("/sys/fs/cgroup/unified")
    assert mounts.find_mount("tracefs", info) == Path("/sys/kernel/tracing")
    assert mounts.find_mount("ext4", info) == Path("/mnt/with space")
    assert mounts.find_mount("bpf", info) is None


def test_capabilities_from_status(tmp_path: Path) -> None:
    status = tmp_path / "status"
    status.write_text("Name:\tx\nCapEff:\t000000c000000000\n")  # CAP_PERFMON + CAP_BPF
    caps = capabilities.effective_capabilities(status)
    assert caps == {"CAP_PERFMON", "CAP_BPF"}
    assert capabilities.can_load_tracing_bpf(caps)
    assert not capabilities.can_load_tracing_bpf({"CAP_BPF"})


def test_tracepoint_exists(tmp_path: Path) -> None:
    (tmp_path / "events/sched/sched_process_exec").mkdir(parents=True)
    (tmp_path / "events/sched/sched_process_exec/format").write_text("name: x")
    assert features.tracepoint_exists(tmp_path, "sched:sched_process_exec")
    assert not features.tracepoint_exists(tmp_path, "sched:sched_nope")
    assert not features.tracepoint_exists(None, "sched:sched_process_exec")
