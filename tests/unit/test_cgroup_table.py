"""cgroup id -> path table over real directories: the cgroup v2 tree when we may
create cgroups in it (root), a tmp_path tree of the same shape otherwise."""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.agent.enrich.cgroup_paths import CgroupIdentity
from vigil.agent.enrich.cgroups import CgroupTable

CID = "0123456789abcdef" * 4
UID = "3f1c2a9e-1b2c-4d5e-8f90-1234567890ab"
POD_SLICE = (
    f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID.replace('-', '_')}.slice"
)
CONTAINER_SCOPE = f"{POD_SLICE}/cri-containerd-{CID}.scope"
EXPECTED = CgroupIdentity(
    container_id=CID, pod_uid=UID, qos_class="burstable", runtime="containerd"
)


def cgroup2_mount() -> Path | None:
    """The cgroup v2 mount point, from /proc/self/mountinfo."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if sep and len(fields) >= 5 and tail and tail[0] == "cgroup2":
            return Path(fields[4].replace("\\040", " "))
    return None


def _can_make_cgroups() -> Path | None:
    mount = cgroup2_mount()
    if mount is None or os.geteuid() != 0 or not os.access(mount, os.W_OK):
        return None
    return mount


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Tree:
    """A root the table scans and a base directory (relative to it) tests build in."""

    root: Path
    base: str  # "/vigil-test-xxxx" under a real cgroup2 mount, "" under tmp_path
    kind: str

    def make(self, rel: str) -> Path:
        """mkdir -p base/rel, one level at a time (cgroupfs has no parents=True)."""
        path = self.root / self.base.lstrip("/")
        for part in rel.split("/"):
            path = path / part
            if not path.exists():
                path.mkdir()
        return path

    def rel(self, rel: str) -> str:
        return f"{self.base}/{rel}"


def _remove_tree(top: Path) -> None:
    """rmdir deepest first: a cgroup goes only once it has no children (its files
    are the kernel's and go with it)."""
    dirs = [Path(d) for d, _, _ in os.walk(top)]
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(FileNotFoundError):
            d.rmdir()


@pytest.fixture(params=["cgroup2", "tmp"])
def tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Tree]:
    if request.param == "tmp":
        yield Tree(root=tmp_path, base="", kind="tmp")
        return
    mount = _can_make_cgroups()
    if mount is None:
        pytest.skip("needs root and a writable cgroup v2 mount; the tmp variant ran instead")
    base = f"/vigil-test-{secrets.token_hex(4)}"
    (mount / base.lstrip("/")).mkdir()
    try:
        yield Tree(root=mount, base=base, kind="cgroup2")
    finally:
        _remove_tree(mount / base.lstrip("/"))


def test_scan_ids_are_inode_numbers(tree: Tree) -> None:
    scope = tree.make(CONTAINER_SCOPE)
    nested = tree.make(f"{CONTAINER_SCOPE}/init.scope")
    table = CgroupTable(tree.root)

    found = table.scan()

    assert found == len(table) >= 6
    assert table.path(os.stat(tree.root).st_ino) == "/"
    scope_id = os.stat(scope).st_ino
    assert table.path(scope_id) == tree.rel(CONTAINER_SCOPE)
    assert table.identity(scope_id) == EXPECTED
    assert table.identity(os.stat(nested).st_ino) == EXPECTED
    pod_id = os.stat(tree.root / tree.rel(POD_SLICE).lstrip("/")).st_ino
    assert table.identity(pod_id) == CgroupIdentity(pod_uid=UID, qos_class="burstable")
    assert (
        table.identity(os.stat(tree.root / tree.base.lstrip("/") / "kubepods.slice").st_ino) is None
    )
    assert scope_id in table
    assert table.path(2**63 + 12345) is None
    assert table.identity(2**63 + 12345) is None


def test_mkdir_event_for_a_real_directory(tree: Tree) -> None:
    table = CgroupTable(tree.root)
    table.scan()
    scope = tree.make(CONTAINER_SCOPE)
    scope_id = os.stat(scope).st_ino
    assert table.path(scope_id) is None  # created after the scan: unknown until the event

    table.on_mkdir(scope_id, tree.rel(CONTAINER_SCOPE))

    assert table.path(scope_id) == tree.rel(CONTAINER_SCOPE)
    assert table.identity(scope_id) == EXPECTED


def test_rescan_tombstones_what_vanished(tree: Tree) -> None:
    clock = FakeClock()
    table = CgroupTable(tree.root, tombstone_seconds=60, clock=clock)
    scope = tree.make(CONTAINER_SCOPE)
    scope_id = os.stat(scope).st_ino
    table.scan()
    scope.rmdir()

    table.scan()

    assert table.identity(scope_id) == EXPECTED  # missed rmdir: still attributed a while
    clock.now += 60
    assert table.path(scope_id) is None


def test_scan_skips_directories_vanishing_mid_walk(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    doomed = tree.make(f"{POD_SLICE}/crio-{CID}.scope")
    listed_then_gone = tree.make(f"{POD_SLICE}/crio-conmon-{CID}.scope")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == doomed:
            doomed.rmdir()  # gone between its parent's listing and its own
        entries = list(real_scandir(path))
        if Path(path) == listed_then_gone.parent and listed_then_gone.exists():
            listed_then_gone.rmdir()  # listed, gone before its stat
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(os, "scandir", scandir)
    table = CgroupTable(tree.root)
    table.scan()

    pod_id = os.stat(tree.root / tree.rel(POD_SLICE).lstrip("/")).st_ino
    assert table.path(pod_id) == tree.rel(POD_SLICE)
    assert not doomed.exists()
    assert not listed_then_gone.exists()


def test_scan_of_missing_root_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        CgroupTable(tmp_path / "absent").scan()


def test_scan_follows_no_symlinks(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "child").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "file").write_text("")
    table = CgroupTable(tmp_path)
    assert table.scan() == 3  # root, real, real/child
    assert table.path(os.stat(tmp_path / "real" / "child").st_ino) == "/real/child"


def test_events_during_a_scan_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    table = CgroupTable(tmp_path, tombstone_seconds=10, clock=clock)
    gone = tmp_path / "gone"
    gone.mkdir()
    gone_id = os.stat(gone).st_ino
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        entries = list(real_scandir(path))
        if Path(path) == tmp_path:
            # Events arrive while the walk runs: "gone" removed (the walk saw it),
            # an id the walk cannot see created.
            table.on_rmdir(gone_id, "/gone")
            table.on_mkdir(424242, "/born/during/scan")
        return contextlib.nullcontext(entries)

    monkeypatch.setattr(os, "scandir", scandir)
    table.scan()

    assert table.path(424242) == "/born/during/scan"
    assert table.path(gone_id) == "/gone"  # a tombstone, not resurrected as live
    clock.now += 10
    assert table.path(gone_id) is None
    assert table.path(424242) == "/born/during/scan"


# -- events and tombstones (no filesystem) ----------------------------------------------


def test_paths_are_normalised() -> None:
    table = CgroupTable(Path("/nonexistent"))
    table.on_mkdir(1, "kubepods.slice/")
    table.on_mkdir(2, "//a//b")
    table.on_mkdir(3, "/")
    assert (table.path(1), table.path(2), table.path(3)) == ("/kubepods.slice", "/a/b", "/")


def test_tombstone_lives_for_the_configured_time() -> None:
    clock = FakeClock()
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=60, clock=clock)
    table.on_mkdir(7, f"/{CONTAINER_SCOPE}")
    identity = table.identity(7)
    assert identity == EXPECTED

    table.on_rmdir(7, f"/{CONTAINER_SCOPE}")
    clock.now += 59.9
    assert table.path(7) == f"/{CONTAINER_SCOPE}"
    assert table.identity(7) is identity  # cached, not re-parsed
    assert len(table) == 1
    assert table.tombstone_count == 1

    clock.now += 0.1
    assert table.path(7) is None
    assert table.identity(7) is None
    assert len(table) == 0
    assert table.tombstone_count == 0


def test_rmdir_without_mkdir_is_still_resolvable() -> None:
    clock = FakeClock()
    table = CgroupTable(Path("/nonexistent"), clock=clock)
    table.on_rmdir(9, f"/{CONTAINER_SCOPE}")
    assert table.identity(9) == EXPECTED


def test_mkdir_revives_a_tombstoned_id() -> None:
    clock = FakeClock()
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=5, clock=clock)
    table.on_mkdir(3, "/old")
    table.on_rmdir(3, "/old")
    table.on_mkdir(3, "/new")  # inode numbers are reused on some filesystems
    clock.now += 100
    assert table.path(3) == "/new"
    assert table.tombstone_count == 0


def test_max_tombstones_bounds_memory() -> None:
    clock = FakeClock()
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=60, max_tombstones=100, clock=clock)
    for i in range(1000):
        table.on_mkdir(i, f"/c{i}")
    for i in range(1000):
        table.on_rmdir(i, f"/c{i}")
        assert table.tombstone_count <= 100
    assert table.tombstone_count == 100
    assert len(table) == 100
    assert table.path(899) is None  # the oldest went first
    assert table.path(900) == "/c900"
    assert table.path(999) == "/c999"


def test_expire_frees_memory_without_events() -> None:
    clock = FakeClock()
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=1, clock=clock)
    for i in range(10):
        table.on_rmdir(i, f"/c{i}")
    clock.now += 1
    assert table.expire() == 10
    assert table.expire() == 0


@pytest.mark.parametrize(("seconds", "limit"), [(0.0, 10), (60.0, 0)])
def test_tombstones_can_be_disabled(seconds: float, limit: int) -> None:
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=seconds, max_tombstones=limit)
    table.on_mkdir(1, "/a")
    table.on_rmdir(1, "/a")
    assert table.path(1) is None
    assert len(table) == 0


@pytest.mark.parametrize("kwargs", [{"tombstone_seconds": -1.0}, {"max_tombstones": -1}])
def test_rejects_negative_limits(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CgroupTable(Path("/nonexistent"), **kwargs)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("mkdir"), st.integers(0, 15)),
        st.tuples(st.just("rmdir"), st.integers(0, 15)),
        st.tuples(st.just("tick"), st.integers(0, 7)),
    ),
    max_size=60,
)


@settings(max_examples=200)
@given(OPS, st.integers(0, 6))
def test_matches_a_simple_model(ops: list[tuple[str, int]], limit: int) -> None:
    """Against a dict model: live ids resolve, tombstones for 5 s, at most `limit`."""
    clock = FakeClock()
    table = CgroupTable(
        Path("/nonexistent"), tombstone_seconds=5, max_tombstones=limit, clock=clock
    )
    live: dict[int, str] = {}
    dead: dict[int, tuple[float, str]] = {}  # insertion-ordered like the table's
    for n, (op, arg) in enumerate(ops):
        if op == "mkdir":
            live[arg] = f"/g{n}"
            dead.pop(arg, None)
            table.on_mkdir(arg, f"/g{n}")
        elif op == "rmdir":
            path = live.pop(arg, f"/r{n}")
            dead.pop(arg, None)
            if limit:
                while len(dead) >= limit:
                    del dead[next(iter(dead))]
                dead[arg] = (clock.now + 5, path)
            table.on_rmdir(arg, path)
        else:
            clock.now += arg
        dead = {k: v for k, v in dead.items() if v[0] > clock.now}
        for cgroup_id in range(16):
            expected = live.get(cgroup_id) or (dead[cgroup_id][1] if cgroup_id in dead else None)
            assert table.path(cgroup_id) == expected
        assert len(table) == len(live) + len(dead)
        assert table.tombstone_count <= limit


def test_concurrent_writer_and_reader() -> None:
    """Lookups without a lock while another thread mkdirs/rmdirs: never an error,
    never a path that was not the id's."""
    table = CgroupTable(Path("/nonexistent"), tombstone_seconds=0.001, max_tombstones=50)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            i = 0
            while not stop.is_set():
                cgroup_id = i % 500
                table.on_mkdir(cgroup_id, f"/w/{cgroup_id}/{CONTAINER_SCOPE}")
                if i % 3 == 0:
                    table.on_rmdir(cgroup_id, f"/w/{cgroup_id}/{CONTAINER_SCOPE}")
                i += 1
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for n in range(50_000):
            cgroup_id = n % 500
            path = table.path(cgroup_id)
            assert path is None or path == f"/w/{cgroup_id}/{CONTAINER_SCOPE}"
            identity = table.identity(cgroup_id)
            assert identity is None or identity == EXPECTED
            if n % 1000 == 0:
                assert len(table) >= 0
    finally:
        stop.set()
        thread.join()
    assert not errors


def test_clock_is_only_read_for_tombstones() -> None:
    calls: list[float] = []

    def clock() -> float:
        calls.append(0.0)
        return 0.0

    table = CgroupTable(Path("/nonexistent"), clock=clock)
    table.on_mkdir(1, "/a")
    before = len(calls)
    for _ in range(100):
        table.path(1)
        table.identity(1)
    assert len(calls) == before  # the hot path for live ids does not call the clock
