"""Real containers for the image e2e: podman (runc) and containerd + ctr.

The recipe is research/containers.md: podman with runc and its own
containers.conf (scripts/build-image.sh writes it), containerd started by
hand on a socket of our own with its root under the cache directory (so the
imported base image survives between runs), and `ctr run --cgroup
/kubepods/<qos>/pod<uid>/<id>` for the cgroup layout a cgroupfs kubelet
gives containerd.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("VIGIL_IMAGE_CACHE", "/var/cache/vigil-image"))
BASE = "docker.io/library/debian:bookworm-slim"
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CACHE / "containers.conf")}


def podman(*args: str, check: bool = True, timeout: float = 120) -> str:
    result = subprocess.run(
        ["podman", *args],
        env=podman_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: exit {result.returncode}: {result.stderr}")
    return result.stdout


def build_image() -> str:
    """scripts/build-image.sh (builds, or reuses the cache); the image reference."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-image.sh"), "--with-containerd"],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/build-image.sh failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def new_id() -> str:
    return secrets.token_hex(32)


@dataclass
class Containerd:
    """A containerd of our own: private socket and state, root in the cache."""

    address: Path
    process: subprocess.Popen[bytes]

    def ctr(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        result = subprocess.run(
            ["ctr", "--address", str(self.address), "--namespace", "default", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)}: exit {result.returncode}: {result.stderr}")
        return result.stdout

    def ensure_base(self, scratch: Path) -> None:
        """podman's base image in containerd, imported again only when podman's changed."""
        marker = CACHE / "containerd" / "vigil-base-id"
        wanted = podman("image", "inspect", "--format", "{{.Id}}", BASE).strip()
        present = BASE in self.ctr("images", "ls", "-q").split()
        if present and marker.is_file() and marker.read_text() == wanted:
            return
        archive = scratch / "base-oci.tar"
        podman("save", "--format", "oci-archive", "-o", str(archive), BASE)
        self.ctr("images", "import", "--base-name", BASE.rsplit(":", 1)[0], str(archive))
        archive.unlink()
        marker.write_text(wanted)

    def run(self, cid: str, *command: str, cgroup: str | None = None) -> None:
        """A detached container on the host network (TCP to the test's listener)."""
        flags = ["--net-host", "-d"]
        if cgroup is not None:
            flags += ["--cgroup", cgroup]
        self.ctr("run", *flags, BASE, cid, *command)

    def exec(self, cid: str, *command: str) -> None:
        self.ctr("task", "exec", "--exec-id", f"e{secrets.token_hex(4)}", cid, *command)

    def remove(self, cid: str) -> None:
        self.ctr("task", "kill", "--signal", "SIGKILL", cid, check=False)
        for _ in range(50):
            if "STOPPED" in self.ctr("task", "ls", check=False) or cid not in self.ctr(
                "task", "ls", check=False
            ):
                break
            time.sleep(0.1)
        self.ctr("task", "rm", "-f", cid, check=False)
        self.ctr("container", "rm", cid, check=False)


@contextlib.contextmanager
def containerd(scratch: Path) -> Iterator[Containerd]:
    root = CACHE / "containerd"
    state = scratch / "containerd-state"
    address = scratch / "containerd.sock"
    log = (scratch / "containerd.log").open("wb")
    process = subprocess.Popen(
        [
            "containerd",
            "--address",
            str(address),
            "--root",
            str(root),
            "--state",
            str(state),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while not address.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"containerd did not start: {(scratch / 'containerd.log')}")
            time.sleep(0.05)
        yield Containerd(address, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def kubepods_path(qos: str) -> tuple[str, str, str]:
    """(cgroup path, pod uid, container id) as a cgroupfs kubelet lays them out."""
    pod_uid, cid = str(uuid.uuid4()), new_id()
    return f"/kubepods/{qos}/pod{pod_uid}/{cid}", pod_uid, cid


def cgroup_hierarchies() -> list[Path]:
    """The v1 hierarchies and the unified one (links such as cpu,cpuacct left out)."""
    return [p for p in CGROUP_V1_ROOT.iterdir() if p.is_dir() and not p.is_symlink()]


def remove_empty_cgroups(*paths: str) -> None:
    """runc removes only the leaf: rmdir the parents it leaves, deepest first, when empty."""
    hierarchies = cgroup_hierarchies()
    for path in paths:
        parts = [p for p in path.split("/") if p]
        for depth in range(len(parts), 0, -1):
            relative = "/".join(parts[:depth])
            for hierarchy in hierarchies:
                with contextlib.suppress(OSError):
                    (hierarchy / relative).rmdir()


def have_tools() -> str | None:
    """Why the image e2e cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (podman and containerd as root)"
    if shutil.which("apt-get") is None:
        return "needs a Debian host (apt-get) to install podman, runc, mmdebstrap, containerd"
    return None
