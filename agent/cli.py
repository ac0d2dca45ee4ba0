"""`vigil-agent`: run the node agent, or check the host with `doctor`."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from vigil import __version__
from vigil.api.config import AgentConfig, ConfigError

if TYPE_CHECKING:
    from vigil.agent.pipeline.readings import Readings
    from vigil.agent.pipeline.sink import Sink
    from vigil.agent.telemetry.export import Telemetry

log = logging.getLogger("vigil.agent")

OUTPUTS = ("console", "json", "otlp", "none")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vigil-agent",
        description="eBPF node agent: process telemetry from tracepoints, attributed to cgroups.",
    )
    parser.add_argument("--version", action="version", version=f"vigil-agent {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="attach the probes and stream what they see")
    run.add_argument(
        "--config",
        type=Path,
        help="AgentConfig YAML (default: built-in defaults); changes apply live",
    )
    run.add_argument(
        "--no-watch",
        action="store_true",
        help="read --config once; do not apply later changes to it",
    )
    run.add_argument(
        "--probes",
        help="comma-separated probes to run, overriding the config (e.g. process)",
    )
    run.add_argument(
        "--output",
        default="console",
        help=f"where events go, comma-separated: {' | '.join(OUTPUTS)} (default: console)",
    )
    run.add_argument(
        "--otlp-endpoint",
        metavar="URL",
        help="collector for OTLP export, e.g. http://127.0.0.1:4317 (implies --output otlp; "
        "overrides export.otlp.endpoint and OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    run.add_argument("--duration", type=float, help="stop after this many seconds")
    run.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve /healthz, /readyz and /metrics here (overrides endpoint.listen)",
    )
    filters = run.add_argument_group("filters (console and JSON output; OTLP export is whole)")
    filters.add_argument("--namespace", help="only events of pods in this namespace")
    filters.add_argument("--pod", help="only events of this pod (k8s.pod.name)")
    filters.add_argument("--container", help="only events of this container (k8s.container.name)")
    filters.add_argument("--pid", type=int, help="only events of this process id")
    filters.add_argument(
        "--comm", help="only events of this executable name (process.executable.name)"
    )
    filters.add_argument(
        "--kind",
        help="only these event kinds, comma-separated; a prefix selects a family "
        "(process = process.exec, process.exit, ...)",
    )

    inspect = commands.add_parser(
        "inspect", help="run the probes for a window, then report per pod/cgroup and every check"
    )
    inspect.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    inspect.add_argument(
        "--output", default="table", help="table | json | markdown (default: table)"
    )
    inspect.add_argument("--config", type=Path, help="AgentConfig YAML (checks, probes settings)")
    inspect.add_argument(
        "--probes",
        help="comma-separated probes (default: process,tcp,runqlat,oom,process_state)",
    )

    top = commands.add_parser("top", help="live view: one row per pod/cgroup, every second")
    top.add_argument("--config", type=Path, help="AgentConfig YAML (checks, probes settings)")
    top.add_argument(
        "--probes", help="comma-separated probes (default: process,tcp,runqlat,oom,process_state)"
    )
    top.add_argument("--namespace", help="only pods of this namespace")
    top.add_argument("--pod", help="only this pod")
    top.add_argument(
        "--sort", default="e", help="initial sort key: e f o z d r c b (default e: exec/s)"
    )
    top.add_argument("--duration", type=float, help="quit after this many seconds")

    doctor = commands.add_parser("doctor", help="check kernel features, privileges and offsets")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--btf",
        type=Path,
        metavar="FILE",
        help="check another kernel offline from its BTF (a copy of its /sys/kernel/btf/vmlinux): "
        "the struct members and tracepoints the probes need",
    )

    tracepoints = commands.add_parser(
        "tracepoints",
        help="list this kernel's tracepoints, or one tracepoint's fields (for subscriptions)",
    )
    tracepoints.add_argument(
        "tracepoint", nargs="?", help="subsystem:event: print its fields and how vigil reads them"
    )
    tracepoints.add_argument(
        "--filter", metavar="TEXT", help="only tracepoints whose name contains TEXT (e.g. sched)"
    )
    return parser


_READS = {
    "scalar": "integer",
    "pointer": "integer (address; not dereferenced)",
    "string": "string",
    "data_loc": "string",
    "rel_loc": "string",
    "array": "integer array",
    "opaque": "not readable",
}


def _tracepoints(args: argparse.Namespace) -> int:
    from vigil.agent.kernel import tracepoint_formats as formats

    try:
        if args.tracepoint is None:
            names = formats.available()
            shown = [n for n in names if args.filter is None or args.filter in n]
            print("\n".join(shown))
            print(f"{len(shown)} of {len(names)} tracepoints", file=sys.stderr)
            return 0
        fmt = formats.load(args.tracepoint)
    except formats.FormatError as exc:
        log.error("%s", exc)
        return 2
    print(f"{fmt.name} (events of kind tracepoint.{fmt.subsystem}.{fmt.event})")
    for field in fmt.own_fields:
        reads = _READS[field.kind]
        if field.kind in ("data_loc", "rel_loc") and not field.textual:
            reads = "bytes (hex)"
        if field.user_string:
            reads += "; readUser: string from user memory"
        print(f"  {field.name:<24} {field.ctype:<28} {reads}")
    if fmt.subsystem in ("syscalls", "raw_syscalls"):
        print("note: syscalls tracepoints tax every syscall of every task while attached")
    return 0


def _sinks(output: str, args: argparse.Namespace | None = None) -> list[Sink]:
    from vigil.agent.sinks.console import ConsoleSink
    from vigil.agent.sinks.filtered import EventFilter, FilteredSink
    from vigil.agent.sinks.jsonl import JsonLinesSink

    wanted = None
    if args is not None:
        kinds = tuple(k.strip() for k in args.kind.split(",") if k.strip()) if args.kind else ()
        wanted = EventFilter(
            namespace=args.namespace,
            pod=args.pod,
            container=args.container,
            pid=args.pid,
            comm=args.comm,
            kinds=kinds,
        )
    sinks: list[Sink] = []
    for name in (part.strip() for part in output.split(",")):
        if name == "console":
            sinks.append(FilteredSink(ConsoleSink(), wanted) if wanted else ConsoleSink())
        elif name == "json":
            sinks.append(FilteredSink(JsonLinesSink(), wanted) if wanted else JsonLinesSink())
        elif name in ("otlp", "none"):
            pass  # otlp: the telemetry sink, see _telemetry; none: only /metrics
        else:
            raise ConfigError(
                f"--output: unknown output {name!r}; choose from {', '.join(OUTPUTS)}"
            )
    return sinks


def _telemetry(
    config: AgentConfig, args: argparse.Namespace, readings: Readings, *, listen: str | None
) -> Telemetry | None:
    """OTLP export and/or the Prometheus endpoint(s), when asked for; None otherwise."""
    from vigil.agent.telemetry.export import Telemetry, wanted

    outputs = [part.strip() for part in args.output.split(",")]
    otlp, needed = wanted(config.export, outputs)
    if args.otlp_endpoint:
        otlp = needed = True
    if not needed and listen is None:
        return None
    node_name = config.enrichment.kubernetes.node_name or os.environ.get("NODE_NAME") or None
    return Telemetry(
        config.export,
        readings=readings,
        otlp=otlp,
        endpoint=args.otlp_endpoint,
        node_name=node_name,
        metrics_registry=listen is not None,
    )


def _privileges_hint() -> str:
    """What the usual cause of a failed start is, in a container: said plainly."""
    from vigil.agent.kernel.capabilities import can_load_tracing_bpf, effective_capabilities

    try:
        caps = effective_capabilities()
    except OSError:
        return ""
    if not can_load_tracing_bpf(caps):
        return (
            "; this process lacks CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN): run as root, "
            "or in a container add those capabilities"
        )
    return (
        "; if `Operation not permitted` came from bpf() or perf_event_open() in a container, "
        "its seccomp profile refuses them without CAP_SYS_ADMIN: use the chart's profile "
        "(charts/vigil/files/seccomp-vigil-agent.json) or Unconfined"
    )


def _run(args: argparse.Namespace) -> int:
    from vigil.agent.config_watch import ConfigWatcher
    from vigil.agent.endpoint import AgentChecks, Endpoint, EndpointError, prometheus_text
    from vigil.agent.pipeline.readings import Readings
    from vigil.agent.runtime import Agent, AgentError
    from vigil.agent.sinks.otlp import OtlpSink
    from vigil.agent.telemetry.provider import TelemetryError
    from vigil.api.config import read_config

    telemetry = None
    endpoint = None
    # What the exporters read of the agent: filled by the agent, held by both.
    readings = Readings()
    try:
        config, text = read_config(args.config) if args.config else (AgentConfig(), None)
        listen = args.listen or config.endpoint.listen
        sinks = _sinks(args.output, args)
        telemetry = _telemetry(config, args, readings, listen=listen)
        if telemetry is not None:
            sinks.append(OtlpSink(telemetry))
        probes = [p.strip() for p in args.probes.split(",")] if args.probes else None
        agent = Agent(
            config,
            sinks=sinks,
            probes=probes,
            config_source=str(args.config or "config"),
            readings=readings,
        )
        if listen is not None:
            checks = AgentChecks(agent, stall_seconds=config.endpoint.stall_seconds)
            registry = telemetry.prometheus_registry if telemetry is not None else None
            endpoint = Endpoint(
                listen,
                health=checks.health,
                ready=checks.ready,
                metrics=prometheus_text(registry) if registry is not None else None,
            )
    except (ConfigError, AgentError, TelemetryError, EndpointError) as exc:
        log.error("%s", exc)
        if telemetry is not None:
            telemetry.shutdown()
        return 2

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        agent.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        agent.start()
    except AgentError as exc:
        log.error("%s (run `vigil-agent doctor`)%s", exc, _privileges_hint())
        if endpoint is not None:
            endpoint.close()
        if telemetry is not None:
            telemetry.shutdown()
        return 1
    watcher = None
    if args.config and not args.no_watch:
        source = str(args.config)
        watcher = ConfigWatcher(
            args.config, lambda new: agent.reload_text(new, source=source), baseline=text
        )
        watcher.start()
    try:
        agent.wait(args.duration)
    finally:
        if watcher is not None:
            watcher.stop()
        agent.stop()
        if endpoint is not None:
            endpoint.close()
        for name, counters in agent.counters().items():
            summary = " ".join(f"{key}={value}" for key, value in counters.items())
            log.info("%s: %s", name, summary)
        p50, p99 = (
            agent.dispatcher.latency.percentile(0.5),
            agent.dispatcher.latency.percentile(0.99),
        )
        if p50 is not None and p99 is not None:
            log.info("event latency (kernel -> handled): p50=%.1fms p99=%.1fms", p50, p99)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "doctor":
        from vigil.agent import doctor

        return doctor.main(as_json=args.json, btf_file=args.btf)
    if args.command == "tracepoints":
        return _tracepoints(args)
    if args.command in ("inspect", "top"):
        return _view(args)
    return _run(args)


def _view(args: argparse.Namespace) -> int:
    """inspect and top: the agent in-process for a report or a live view."""
    from vigil.agent.runtime import AgentError
    from vigil.api.config import read_config

    try:
        config = read_config(args.config)[0] if args.config else AgentConfig()
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    if args.probes:
        probes = [p.strip() for p in args.probes.split(",") if p.strip()]
    else:
        from vigil.agent.inspect import DEFAULT_PROBES

        probes = list(DEFAULT_PROBES)
    try:
        if args.command == "inspect":
            from vigil.agent import inspect

            return inspect.run(config, probes=probes, duration=args.duration, output=args.output)
        from vigil.agent import top

        return top.run(
            config,
            probes=probes,
            namespace=args.namespace,
            pod=args.pod,
            sort=args.sort,
            duration=args.duration,
        )
    except (ConfigError, AgentError) as exc:
        log.error("%s (run `vigil-agent doctor`)", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
