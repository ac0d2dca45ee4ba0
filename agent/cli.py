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

OUTPUTS = ("console", "json", "otlp")


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

    doctor = commands.add_parser("doctor", help="check kernel features, privileges and offsets")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument(
        "--btf",
        type=Path,
        metavar="FILE",
        help="check another kernel offline from its BTF (a copy of its /sys/kernel/btf/vmlinux): "
        "the struct members and tracepoints the probes need",
    )
    return parser


def _sinks(output: str) -> list[Sink]:
    from vigil.agent.sinks.console import ConsoleSink
    from vigil.agent.sinks.jsonl import JsonLinesSink

    sinks: list[Sink] = []
    for name in (part.strip() for part in output.split(",")):
        if name == "console":
            sinks.append(ConsoleSink())
        elif name == "json":
            sinks.append(JsonLinesSink())
        elif name == "otlp":
            pass  # the telemetry sink, see _telemetry
        else:
            raise ConfigError(
                f"--output: unknown output {name!r}; choose from {', '.join(OUTPUTS)}"
            )
    return sinks


def _telemetry(
    config: AgentConfig, args: argparse.Namespace, readings: Readings
) -> Telemetry | None:
    """OTLP export and/or the Prometheus endpoint, when asked for; None otherwise."""
    from vigil.agent.telemetry.export import Telemetry, wanted

    outputs = [part.strip() for part in args.output.split(",")]
    otlp, needed = wanted(config.export, outputs)
    if args.otlp_endpoint:
        otlp = needed = True
    if not needed:
        return None
    node_name = config.enrichment.kubernetes.node_name or os.environ.get("NODE_NAME") or None
    return Telemetry(
        config.export,
        readings=readings,
        otlp=otlp,
        endpoint=args.otlp_endpoint,
        node_name=node_name,
    )


def _run(args: argparse.Namespace) -> int:
    from vigil.agent.config_watch import ConfigWatcher
    from vigil.agent.pipeline.readings import Readings
    from vigil.agent.runtime import Agent, AgentError
    from vigil.agent.sinks.otlp import OtlpSink
    from vigil.agent.telemetry.provider import TelemetryError
    from vigil.api.config import read_config

    telemetry = None
    # What the exporters read of the agent: filled by the agent, held by both.
    readings = Readings()
    try:
        config, text = read_config(args.config) if args.config else (AgentConfig(), None)
        sinks = _sinks(args.output)
        telemetry = _telemetry(config, args, readings)
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
    except (ConfigError, AgentError, TelemetryError) as exc:
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
        log.error("%s (run `vigil-agent doctor`)", exc)
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
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
