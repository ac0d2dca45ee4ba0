"""`vigil-agent doctor`: can this host run vigil's probes, and why not.

`doctor --btf FILE` asks the same of another kernel, offline, from its BTF alone
(its /sys/kernel/btf/vmlinux copied off, or BTF extracted from its vmlinux): every
struct member the probes read, and every tracepoint they attach to. A raw
tracepoint `cat:event` exists when the BTF has the typedef `btf_trace_<event>`;
a syscall tracepoint `syscalls:sys_exit_<call>` when it has the function
`__x64_sys_<call>` (and the kernel has CONFIG_FTRACE_SYSCALLS, which BTF cannot
tell). What BTF cannot answer either (ring buffers, privileges, headers, bcc) is
only checked on the host that runs the agent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from vigil.agent.kernel import btf, compiler, features, headers, limits
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import registry
from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.agent.probes.cgroups import CgroupProbe
from vigil.api.config import AgentConfig


def shipped_probes() -> list[Probe]:
    context = ProbeContext(clock=MonotonicClock())
    config = AgentConfig()
    probes: list[Probe] = []
    for name in registry.PROBES:
        try:
            probes.append(registry.create(name, context, config))
        except ProbeError:
            continue  # not in this build
    return [*probes, CgroupProbe(context)]  # runs with enrichment


def _probe_verdicts(
    probes: list[Probe],
    kernel: str,
    missing_tracepoints: dict[str, str],
    offsets: compiler.FieldOffsets,
    reader: btf.BTF | None,
) -> dict[str, dict[str, Any]]:
    """Per probe: what it needs, and "not supported on <kernel>: <reason>" when it lacks any."""
    verdicts: dict[str, dict[str, Any]] = {}
    for probe in probes:
        tracepoints = sorted({hook.tracepoint for hook in probe.hooks})
        reasons = [
            f"tracepoint {tp} {missing_tracepoints[tp]}"
            for tp in tracepoints
            if tp in missing_tracepoints
        ]
        reasons += [
            f"BTF member {member}: {offsets.missing[member]}"
            for member in sorted(probe.members)
            if member in offsets.missing
        ]
        if reader is not None:  # kernel features the probe's defaults need (limits.py)
            reasons += limits.probe_limits(probe.name, reader)
        verdicts[probe.name] = {
            "tracepoints": tracepoints,
            "btf_members": sorted(probe.members),
            "supported": not reasons,
            "status": "supported"
            if not reasons
            else f"not supported on {kernel}: " + "; ".join(reasons),
        }
    return verdicts


def _offsets_json(offsets: compiler.FieldOffsets) -> dict[str, dict[str, Any]]:
    return {
        path: {"offset": loc.offset, "size": loc.size, "type": loc.type_name}
        for path, loc in sorted(offsets.resolved.items())
    }


def collect() -> dict[str, Any]:
    """Everything doctor reports, as plain data (the --json output)."""
    probes = shipped_probes()
    tracepoints = {hook.tracepoint for probe in probes for hook in probe.hooks}
    members = {member for probe in probes for member in probe.members}
    checks = features.probe_features(tracepoints)
    offsets = compiler.resolve_fields(members)
    try:
        tree: str | None = headers.resolve_headers().describe()
    except headers.HeadersNotFound:
        tree = None
    problems = [f"{c.name}: {c.detail}" for c in checks if c.required and not c.ok]
    problems += [f"BTF member {name}: {reason}" for name, reason in offsets.missing.items()]
    missing_tracepoints = {
        c.name.removeprefix("tracepoint "): c.detail
        for c in checks
        if c.name.startswith("tracepoint ") and not c.ok
    }
    return {
        "ok": not problems,
        "kernel": os.uname().release,
        "problems": problems,
        "checks": [check.as_dict() for check in checks],
        "header_tree": tree,
        "btf_offsets": _offsets_json(offsets),
        "btf_missing": offsets.missing,
        "probes": _probe_verdicts(
            probes, os.uname().release, missing_tracepoints, offsets, _running_btf()
        ),
    }


def _running_btf() -> btf.BTF | None:
    try:
        return btf.load_vmlinux()
    except btf.BTFError:
        return None


def tracepoint_in_btf(reader: btf.BTF, tracepoint: str) -> tuple[bool, str]:
    """Whether the kernel behind `reader` has `tracepoint` ("category:event"), from BTF alone."""
    category, _, event = tracepoint.partition(":")
    if category == "syscalls":
        call = event.removeprefix("sys_enter_").removeprefix("sys_exit_")
        function = f"__x64_sys_{call}"
        if reader.has_function(function):
            return True, f"syscall present ({function}); also needs CONFIG_FTRACE_SYSCALLS"
        return False, f"missing: no {function} in BTF"
    typedef = f"btf_trace_{event}"
    if reader.has_typedef(typedef):
        return True, f"present ({typedef})"
    return False, f"missing: no {typedef} in BTF"


def collect_offline(path: Path) -> dict[str, Any]:
    """What doctor can tell about another kernel from its BTF file (the --btf report)."""
    probes = shipped_probes()
    kernel = str(path)
    checks: list[features.Check] = []
    try:
        reader: btf.BTF | None = btf.BTF.from_file(path)
        checks.append(features.Check("btf", True, f"{path} parsed", True))
    except btf.BTFError as exc:
        reader = None
        checks.append(features.Check("btf", False, str(exc), True))
    missing_tracepoints: dict[str, str] = {}
    for tracepoint in sorted({hook.tracepoint for probe in probes for hook in probe.hooks}):
        if reader is None:
            ok, detail = False, "unknown: no BTF"
        else:
            ok, detail = tracepoint_in_btf(reader, tracepoint)
        checks.append(features.Check(f"tracepoint {tracepoint}", ok, detail, True))
        if not ok:
            missing_tracepoints[tracepoint] = detail
    members = {member for probe in probes for member in probe.members}
    if reader is None:
        offsets = compiler.FieldOffsets(missing=dict.fromkeys(sorted(members), "no BTF"))
    else:
        offsets = compiler.resolve_fields(members, reader)
    problems = [f"{c.name}: {c.detail}" for c in checks if c.required and not c.ok]
    problems += [f"BTF member {name}: {reason}" for name, reason in offsets.missing.items()]
    return {
        "ok": not problems,
        "kernel": kernel,
        "problems": problems,
        "checks": [check.as_dict() for check in checks],
        "header_tree": None,
        "btf_offsets": _offsets_json(offsets),
        "btf_missing": offsets.missing,
        "probes": _probe_verdicts(probes, kernel, missing_tracepoints, offsets, reader),
        "not_checked": "ring buffers, privileges, kernel headers and bcc: only on the host itself",
    }


def render(report: dict[str, Any], console: Console) -> None:
    table = Table(title="vigil doctor", show_lines=False)
    table.add_column("check")
    table.add_column("status")
    table.add_column("detail")
    for check in report["checks"]:
        if check["ok"]:
            status = "[green]ok[/green]"
        elif check["required"]:
            status = "[red]missing[/red]"
        else:
            status = "[yellow]missing[/yellow]"
        table.add_row(check["name"], status, check["detail"])
    console.print(table)
    offsets = Table(title="BTF offsets read by the shipped probes")
    offsets.add_column("member")
    offsets.add_column("offset", justify="right")
    offsets.add_column("size", justify="right")
    offsets.add_column("type")
    for path, loc in report["btf_offsets"].items():
        offsets.add_row(path, str(loc["offset"]), str(loc["size"]), loc["type"])
    for path, reason in report["btf_missing"].items():
        offsets.add_row(path, "[red]-[/red]", "-", reason)
    console.print(offsets)
    verdicts = Table(title=f"probes on {report['kernel']}")
    verdicts.add_column("probe")
    verdicts.add_column("status")
    for name, probe in report["probes"].items():
        colour = "green" if probe["supported"] else "red"
        verdicts.add_row(name, f"[{colour}]{probe['status']}[/{colour}]")
    console.print(verdicts)
    if "not_checked" in report:
        console.print(f"checked offline from BTF; not checked: {report['not_checked']}")
    else:
        console.print(f"header tree: {report['header_tree'] or '[red]none[/red]'}")
    where = (
        "on this host" if "not_checked" not in report else f"on the kernel of {report['kernel']}"
    )
    if report["ok"]:
        console.print(f"[green]vigil can run its probes {where}.[/green]")
    else:
        console.print(f"[red]vigil cannot run all its probes {where}:[/red]")
        for problem in report["problems"]:
            console.print(f"  - {problem}")


def main(*, as_json: bool, btf_file: Path | None = None) -> int:
    report = collect() if btf_file is None else collect_offline(btf_file)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console())
    return 0 if report["ok"] else 1
