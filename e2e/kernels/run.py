"""`make test-kernels`: boot each cached Debian kernel under QEMU, run the kernel tests.

For every kernel prepare.sh lists (the newest of each Debian suite), boot it with
the cached initramfs and the shared read-only rootfs, the project tree shared
read-only at /src (so the guest runs this checkout), and guest-test.sh, which runs
`vigil-agent doctor`, attaches every probe and runs `pytest -m kernel` (the
kernel-marked integration tests). Results come back through a writable 9p share.
On the host, `vigil-agent doctor --btf` reads each guest's BTF and must agree with
the guest's own doctor. Prints one row per kernel and exits 1 if any kernel fails.

KVM is used when it can boot a distro kernel (vmx/svm in /proc/cpuinfo and a probe
boot that prints "Linux version"); otherwise TCG. Kernels run one after another:
a TCG guest with 2 vCPUs keeps both host cores busy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PROBES = ("process", "tcp", "runqlat", "syscalls", "oom", "process_state")


@dataclass
class Kernel:
    suite: str
    version: str
    release: str
    vmlinuz: Path
    initrd: Path


@dataclass
class Result:
    kernel: Kernel
    wall: float = 0.0
    boot: str = "-"
    doctor: str = "-"
    btf_doctor: str = "-"
    probes: dict[str, str] = field(default_factory=dict)
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def log(message: str) -> None:
    print(f"test-kernels: {message}", file=sys.stderr, flush=True)


def read_kernels(cache: Path) -> list[Kernel]:
    kernels = []
    for line in (cache / "kernels.list").read_text().splitlines():
        suite, version, release, vmlinuz, initrd = line.split()
        kernels.append(Kernel(suite, version, release, Path(vmlinuz), Path(initrd)))
    return kernels


def qemu_command(kernel: Kernel, accel: str, rootfs: Path, share: Path) -> list[str]:
    cpu = ["-enable-kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi"]
    cpu += [] if accel == "kvm" else ["-cpu", "max"]
    return [
        "qemu-system-x86_64", *cpu, "-m", "2G", "-smp", "2", "-nographic", "-no-reboot",
        "-net", "none", "-kernel", str(kernel.vmlinuz), "-initrd", str(kernel.initrd),
        "-append", "console=ttyS0 panic=-1 quiet rdinit=/init",
        "-virtfs", f"local,path={rootfs},mount_tag=root,security_model=passthrough,readonly=on",
        "-virtfs", f"local,path={ROOT},mount_tag=work,security_model=passthrough,readonly=on",
        "-virtfs", f"local,path={share},mount_tag=share,security_model=passthrough",
    ]  # fmt: skip


def kvm_works(kernel: Kernel) -> tuple[bool, str]:
    """KVM only when it boots a distro kernel: PVM's /dev/kvm (no vmx/svm) cannot."""
    flags = Path("/proc/cpuinfo").read_text()
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "no usable /dev/kvm"
    if not re.search(r"\b(vmx|svm)\b", flags):
        return False, "/dev/kvm present but no vmx/svm in /proc/cpuinfo (nested PVM?)"
    cmd = [
        "timeout", "20", "qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-m", "512M",
        "-nographic", "-no-reboot", "-net", "none", "-kernel", str(kernel.vmlinuz),
        "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, errors="replace").stdout
    if "Linux version" in out:
        return True, "KVM probe boot printed 'Linux version'"
    return False, "KVM probe boot printed nothing within 20 s"


def read_times(path: Path) -> dict[str, float]:
    times = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            times[name] = float(value)
    return times


def attached_probes(stderr: str) -> dict[str, str]:
    """What `vigil-agent run --probes <all>` said about each probe."""
    states: dict[str, str] = {}
    for match in re.finditer(r"probe (\w+) not running: (.*)", stderr):
        reason = match.group(2).strip()
        states[match.group(1)] = reason.removeprefix(f"probe {match.group(1)}: ")
    ready = re.search(r"ready: probes (.*?) attached", stderr)
    for name in PROBES:
        if name in states:
            continue
        states[name] = "attached" if ready and re.search(rf"\b{name}\b", ready.group(1)) else "?"
    return states


def junit_counts(path: Path, result: Result) -> None:
    if not path.is_file():
        result.problems.append("no junit.xml: pytest did not finish")
        return
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            result.failed += 1
            result.failures.append(name)
        elif case.find("skipped") is not None:
            result.skipped += 1
        else:
            result.passed += 1


def btf_doctor(btf: Path, guest: dict[str, object]) -> str:
    """`doctor --btf` on the host must agree with the guest's doctor on every offset."""
    agent = ROOT / ".venv" / "bin" / "vigil-agent"
    proc = subprocess.run(
        [str(agent), "doctor", "--btf", str(btf), "--json"],
        check=False,
        capture_output=True,
        text=True,
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return f"no report (rc {proc.returncode}): {proc.stderr.strip()[-200:]}"
    if report.get("btf_offsets") != guest.get("btf_offsets"):
        return "offsets differ from the guest's doctor"
    if not report.get("ok"):
        return "; ".join(report.get("problems", []))[:200] or "not ok"
    return "ok"


def run_kernel(kernel: Kernel, *, accel: str, cache: Path, share: Path, timeout: int) -> Result:
    result = Result(kernel)
    out = share / "results" / kernel.release
    shutil.rmtree(out, ignore_errors=True)
    serial = cache / f"serial-{kernel.release}.log"
    started = time.monotonic()
    with serial.open("w") as console:
        proc = subprocess.run(
            ["timeout", str(timeout), *qemu_command(kernel, accel, cache / "rootfs", share)],
            check=False,
            stdout=console,
            stderr=subprocess.STDOUT,
        )
    result.wall = time.monotonic() - started
    if proc.returncode == 124:
        result.problems.append(f"timed out after {timeout} s (serial log: {serial})")
    elif proc.returncode != 0:
        result.problems.append(f"qemu exited {proc.returncode} (serial log: {serial})")
    times = read_times(out / "times")
    if "start" not in times:
        result.problems.append(f"the guest never ran the tests (serial log: {serial})")
        tail = serial.read_text(errors="replace").splitlines()[-15:]
        result.problems += [f"  serial: {line}" for line in tail]
        return result
    result.boot = f"{times['start']:.1f}"
    try:
        guest_doctor = json.loads((out / "doctor.json").read_text())
        result.doctor = "ok" if guest_doctor["ok"] else "; ".join(guest_doctor["problems"])
    except (OSError, ValueError, KeyError) as exc:
        guest_doctor = {}
        result.doctor = f"no report: {exc}"
    if result.doctor != "ok":
        result.problems.append(f"doctor: {result.doctor}")
    btf = out / "vmlinux.btf"
    result.btf_doctor = btf_doctor(btf, guest_doctor) if btf.is_file() else "no BTF"
    if result.btf_doctor != "ok":
        result.problems.append(f"doctor --btf: {result.btf_doctor}")
    probes_err = (
        (out / "probes.err").read_text(errors="replace") if (out / "probes.err").is_file() else ""
    )
    result.probes = attached_probes(probes_err)
    # A probe the kernel cannot run must say so ("not supported on <release>: why");
    # anything else that kept it from attaching is a failure.
    result.problems += [
        f"probe {n}: {s}"
        for n, s in result.probes.items()
        if s != "attached" and "not supported on" not in s
    ]
    result.notes += [f"probe {n}: {s}" for n, s in result.probes.items() if "not supported on" in s]
    junit_counts(out / "junit.xml", result)
    rc = (out / "pytest.rc").read_text().strip() if (out / "pytest.rc").is_file() else "?"
    if rc != "0" or result.failed or not result.passed:
        result.problems.append(
            f"pytest -m kernel: rc {rc}, {result.failed} failed ({out / 'pytest.log'})"
        )
    return result


def _short(state: str) -> str:
    if "not supported on" in state:
        return "not supported (below)"
    return state[:40]


def table(results: list[Result], accel: str) -> str:
    head = ["kernel", "suite", "boot s", "wall s", "doctor", "doctor --btf", *PROBES, "tests"]
    rows = [head]
    for r in results:
        tests = f"{r.passed} passed, {r.failed} failed" + (
            f", {r.skipped} skipped" if r.skipped else ""
        )
        rows.append([
            r.kernel.release, r.kernel.suite, r.boot, f"{r.wall:.0f}",
            r.doctor[:40], r.btf_doctor[:40],
            *(_short(r.probes.get(p, "-")) for p in PROBES), tests,
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [f"kernel matrix ({accel}, -m 2G -smp 2)"]
    for n, row in enumerate(rows):
        lines.append(
            "| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |"
        )
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("VIGIL_KERNELS_CACHE", "/var/cache/vigil-kernels")),
    )
    parser.add_argument(
        "--kernels",
        default=os.environ.get("KERNELS", ""),
        help="comma-separated suites or release prefixes (default: all)",
    )
    parser.add_argument(
        "--timeout",
        type=int,
        default=int(os.environ.get("VIGIL_KERNEL_TIMEOUT", "900")),
        help="seconds per guest",
    )
    parser.add_argument(
        "--accel", choices=("auto", "kvm", "tcg"), default=os.environ.get("VIGIL_ACCEL", "auto")
    )
    parser.add_argument("--no-prepare", action="store_true", help="use the cache as it is")
    args = parser.parse_args()  # fmt: skip

    started = time.monotonic()
    if not args.no_prepare:
        env = dict(os.environ, VIGIL_KERNELS_CACHE=str(args.cache))
        subprocess.run(["bash", str(HERE / "prepare.sh")], check=True, env=env)
        log(f"prepared in {time.monotonic() - started:.0f} s")
    kernels = read_kernels(args.cache)
    wanted = [w for w in args.kernels.split(",") if w]
    if wanted:
        kernels = [
            k
            for k in kernels
            if any(k.suite == w or re.match(rf"{re.escape(w)}[.-]", k.release) for w in wanted)
        ]
    results: list[Result] = []
    missing = [k for k in kernels if k.release == "-"]
    kernels = [k for k in kernels if k.release != "-"]
    if not kernels:
        log("no kernels to boot")
        return 1

    accel = args.accel
    if accel == "auto":
        ok, why = kvm_works(kernels[0])
        accel = "kvm" if ok else "tcg"
        log(f"accelerator: {accel} ({why})")
    share = args.cache / "share"
    shutil.rmtree(share, ignore_errors=True)
    (share / "results").mkdir(parents=True)
    shutil.copy(HERE / "guest-test.sh", share / "guest-test.sh")
    for kernel in kernels:
        log(f"booting {kernel.release} ({kernel.suite} {kernel.version}) under {accel}")
        result = run_kernel(
            kernel, accel=accel, cache=args.cache, share=share, timeout=args.timeout
        )
        log(f"{kernel.release}: {'ok' if result.ok else 'FAILED'} in {result.wall:.0f} s")
        results.append(result)

    print(table(results, accel))
    for kernel in missing:
        print(f"{kernel.suite}: NO KERNEL (not on the mirror and no kept copy)")
    for r in results:
        for failure in r.failures:
            print(f"{r.kernel.release}: FAILED {failure}")
        for note in r.notes:
            print(f"{r.kernel.release}: {note}")
        for problem in r.problems:
            print(f"{r.kernel.release}: {problem}")
    print(f"total {time.monotonic() - started:.0f} s; results in {share / 'results'}")
    return 0 if all(r.ok for r in results) and not missing else 1


if __name__ == "__main__":
    sys.exit(main())
