"""The running agent: compile and attach probes, run the pipeline, stop cleanly.

Start-up compiles the enabled probes' C files together (one clang run); if
that fails it compiles them one by one to find the culprit, reports it, and
runs the rest. Shutdown detaches every program first, then drains what the
ring buffers still hold, so no event seen before the stop is lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.pods import PodCache, PodWatcher, api_client_from_environment
from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.kernel import compiler, mounts
from vigil.agent.pipeline.dispatch import Dispatcher, Stage
from vigil.agent.pipeline.ringbuf import RingBufferReader
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import registry
from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.agent.probes.cgroups import CgroupProbe
from vigil.agent.probes.process import ProcessProbe
from vigil.agent.sinks.base import Sink
from vigil.api.config import AgentConfig

log = logging.getLogger("vigil.agent")

HOUSEKEEPING_SECONDS = 1.0


class AgentError(RuntimeError):
    """The agent cannot run at all (no probe could be attached)."""


@dataclass(slots=True)
class _Module:
    compiled: compiler.CompiledModule
    probes: list[Probe]
    reader: RingBufferReader | None = None


@dataclass(slots=True)
class StartReport:
    attached: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        sinks: Sequence[Sink],
        probes: Sequence[str] | None = None,
    ) -> None:
        self.config = config
        self.sinks = list(sinks)
        self.probe_names = list(probes) if probes is not None else config.probes.enabled()
        unknown = sorted(set(self.probe_names) - registry.PROBES.keys())
        if unknown:
            known = ", ".join(registry.PROBES)
            raise AgentError(f"unknown probe(s) {', '.join(unknown)}; known: {known}")
        self.clock = MonotonicClock()
        self.process_table = ProcessTable(config.pipeline.process_table_size)
        self.cgroups: CgroupTable | None = None
        self.pods: PodCache | None = None
        self.pod_watcher: PodWatcher | None = None
        self.enricher = self._build_enricher()
        stages: list[Stage] = [self.process_table]
        if self.enricher is not None:
            stages.append(self.enricher)
        self.dispatcher = Dispatcher(stages, self.sinks, max_batches=config.pipeline.queue_batches)
        self.probes: dict[str, Probe] = {}
        self._modules: list[_Module] = []
        self._stopped = threading.Event()
        self.report = StartReport()

    def _build_enricher(self) -> Enricher | None:
        settings = self.config.enrichment
        if not settings.enabled:
            return None
        root = mounts.cgroup2_root()
        if root is None:
            log.warning("no cgroup v2 mount: events carry vigil.cgroup.id only")
            return None
        self.cgroups = CgroupTable(root, tombstone_seconds=settings.cgroup_tombstone_seconds)
        k8s = settings.kubernetes
        node_name = k8s.node_name or os.environ.get("NODE_NAME") or None
        if k8s.mode != "off":
            try:
                client = api_client_from_environment(k8s.kubeconfig)
            except ValueError as exc:
                raise AgentError(f"enrichment.kubernetes.kubeconfig: {exc}") from None
            if client is not None and node_name:
                self.pods = PodCache()
                self.pod_watcher = PodWatcher(self.pods, node_name=node_name, api_client=client)
            elif k8s.mode == "on":
                missing = "a node name (nodeName or $NODE_NAME)" if client else "API access"
                raise AgentError(
                    f"enrichment.kubernetes.mode is on but there is no {missing}: "
                    "run in a cluster, or set enrichment.kubernetes.kubeconfig"
                )
        return Enricher(
            self.cgroups,
            pods=self.pods,
            node_name=node_name,
            pod_labels=k8s.pod_labels,
            hold_seconds=k8s.hold_ms / 1000 if self.pods is not None else 0.0,
            hold_max=k8s.hold_max_events,
        )

    # -- start ---------------------------------------------------------------

    def _compile(self, probes: list[Probe]) -> compiler.CompiledModule:
        members = {member for probe in probes for member in probe.members}
        offsets = compiler.resolve_fields(members)
        if offsets.missing:
            # Every member the shipped probes read is essential to them.
            raise ProbeError(
                "kernel struct members not resolvable from BTF: "
                + "; ".join(f"{name}: {why}" for name, why in sorted(offsets.missing.items()))
                + " (run `vigil-agent doctor`)"
            )
        defines: dict[str, int | str] = {}
        for probe in probes:
            defines.update(probe.defines())
        sources = compiler.module_sources(probe.source for probe in probes)
        return compiler.compile_sources(sources, offsets=offsets, defines=defines)

    def _compile_isolating_failures(self, probes: list[Probe]) -> None:
        try:
            self._modules.append(_Module(self._compile(probes), probes))
            return
        except (compiler.CompileError, ProbeError) as exc:
            if len(probes) == 1:
                self.report.failed[probes[0].name] = str(exc)
                return
            log.warning("compiling probes together failed; compiling one by one: %s", exc)
        for probe in probes:
            self._compile_isolating_failures([probe])

    def start(self) -> StartReport:
        started = time.perf_counter()
        if mounts.ensure_tracefs() is None:
            raise AgentError("tracefs is not mounted at /sys/kernel/tracing and cannot be (root?)")
        self.process_table.seed_from_proc()
        context = ProbeContext(clock=self.clock)
        wanted = []
        for name in self.probe_names:
            try:
                wanted.append(registry.create(name, context, self.config))
            except ProbeError as exc:
                self.report.failed[name] = str(exc)
        if self.enricher is not None:
            wanted.append(CgroupProbe(context))
        self._compile_isolating_failures(wanted)

        for module in self._modules:
            attached = []
            for probe in module.probes:
                try:
                    probe.attach(module.compiled.bpf)
                except ProbeError as exc:
                    self.report.failed[probe.name] = str(exc)
                    continue
                attached.append(probe)
                self.probes[probe.name] = probe
                self.report.attached.append(probe.name)
            module.probes = attached
            if attached:
                module.reader = RingBufferReader(
                    module.compiled.bpf,
                    attached,
                    self.dispatcher.submit,
                    drain_interval_ms=self.config.pipeline.drain_interval_ms,
                )

        for name, reason in self.report.failed.items():
            log.error("probe %s not running: %s", name, reason)
        if not self.probes:
            self._close_modules()
            raise AgentError(
                "no probe could be attached: " + "; ".join(self.report.failed.values())
            )

        if self.cgroups is not None:
            # After attaching: a cgroup made meanwhile is then seen twice, never missed.
            self.cgroups.scan()
        if self.pod_watcher is not None:
            self.pod_watcher.start()
        self.dispatcher.start()
        for module in self._modules:
            if module.reader is not None:
                module.reader.start()
        self.report.seconds = time.perf_counter() - started
        log.info(
            "ready: probes %s attached in %.2fs",
            ", ".join(self.report.attached),
            self.report.seconds,
        )
        return self.report

    # -- run -----------------------------------------------------------------

    def housekeeping(self) -> None:
        """Periodic work on the main thread: clock offset, kernel drop counters, expiry."""
        self.clock.refresh()
        if self.cgroups is not None:
            self.cgroups.expire()
        if self.pods is not None:
            self.pods.expire()
        for probe in self.probes.values():
            before = probe.counters.dropped_kernel
            probe.read_kernel_drops()
            if probe.counters.dropped_kernel > before:
                log.warning(
                    "probe %s: %d records dropped in the kernel (ring buffer full)",
                    probe.name,
                    probe.counters.dropped_kernel - before,
                )

    def wait(self, duration: float | None = None) -> None:
        """Block until `duration` passes or stop() is requested, doing housekeeping."""
        deadline = None if duration is None else time.monotonic() + duration
        while not self._stopped.is_set():
            timeout = HOUSEKEEPING_SECONDS
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return
            if self._stopped.wait(timeout):
                return
            self.housekeeping()

    def request_stop(self) -> None:
        self._stopped.set()

    def zombie_counts(self) -> dict[int, int]:
        probe = self.probes.get("process")
        return probe.zombie_counts() if isinstance(probe, ProcessProbe) else {}

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        """Detach, drain the ring buffers, flush the pipeline and sinks, unload."""
        self._stopped.set()
        if self.pod_watcher is not None:
            self.pod_watcher.stop()
        for probe in self.probes.values():
            probe.detach()
        for probe in self.probes.values():
            probe.read_kernel_drops()
        for module in self._modules:
            if module.reader is not None:
                module.reader.stop()
        self.dispatcher.stop()
        # Sinks close before the BPF maps go: the last metric export still reads them.
        for sink in self.sinks:
            sink.close()
        self._close_modules()

    def _close_modules(self) -> None:
        for module in self._modules:
            try:
                module.compiled.close()
            except Exception as exc:
                log.warning("unloading BPF module failed: %s", exc)
        self._modules.clear()

    def counters(self) -> dict[str, dict[str, int]]:
        """Self-counters: per probe, plus enrichment and the pod watch when they run."""
        counters = {name: probe.counters.as_dict() for name, probe in self.probes.items()}
        if self.enricher is not None:
            counters["enrichment"] = self.enricher.counters.as_dict()
        if self.pod_watcher is not None:
            counters["kubernetes"] = dict(self.pod_watcher.counters)
        return counters
