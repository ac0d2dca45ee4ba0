"""`vigil-agent doctor`: can this host run vigil's probes, and why not."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

from vigil.agent.kernel import compiler, features, headers
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
    return {
        "ok": not problems,
        "problems": problems,
        "checks": [check.as_dict() for check in checks],
        "header_tree": tree,
        "btf_offsets": {
            path: {"offset": loc.offset, "size": loc.size, "type": loc.type_name}
            for path, loc in sorted(offsets.resolved.items())
        },
        "btf_missing": offsets.missing,
        "probes": {
            probe.name: {
                "tracepoints": sorted({hook.tracepoint for hook in probe.hooks}),
                "btf_members": sorted(probe.members),
            }
            for probe in probes
        },
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
    console.print(f"header tree: {report['header_tree'] or '[red]none[/red]'}")
    if report["ok"]:
        console.print("[green]vigil can run its default probes on this host.[/green]")
    else:
        console.print("[red]vigil cannot run its default probes:[/red]")
        for problem in report["problems"]:
            console.print(f"  - {problem}")


def main(*, as_json: bool) -> int:
    report = collect()
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        render(report, Console())
    return 0 if report["ok"] else 1
