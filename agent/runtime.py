"""The running agent: compile and attach probes, run the pipeline, stop cleanly.

Start-up compiles the enabled probes' C files together (one clang run); if
that fails it compiles them one by one to find the culprit, reports it, and
runs the rest. Shutdown detaches every program first, then drains what the
ring buffers still hold, so no event seen before the stop is lost.

A new config applies without a restart (``reload``): probes whose settings
did not change keep running untouched; changed settings go through the
probe's maps, or, when a compile-time size changed, a new instance is
compiled and attached before the old one is detached; newly enabled probes
compile into a module of their own; a module is closed once none of its
probes runs. Policies (selection and rules) are swapped in one step. An
invalid config is rejected and counted; the one in force stays.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.namespaces import NamespaceCache
from vigil.agent.enrich.pods import PodCache, PodWatcher, api_client_from_environment
from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.kernel import compiler, mounts
from vigil.agent.pipeline.dispatch import Dispatcher, Stage
from vigil.agent.pipeline.ringbuf import RingBufferReader
from vigil.agent.pipeline.sink import Sink
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import registry
from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.agent.probes.cgroups import CgroupProbe
from vigil.agent.probes.process import ProcessProbe
from vigil.agent.selection.kernel import KernelSelection
from vigil.agent.selection.policies import PolicySet, compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.agent.selection.subjects import SubjectResolver
from vigil.api.config import AgentConfig, ConfigError

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


@dataclass(slots=True)
class ReloadReport:
    """What one config change did; probes that failed keep their previous state."""

    attached: list[str] = field(default_factory=list)  # newly enabled or recompiled
    failed: dict[str, str] = field(default_factory=dict)
    updated: list[str] = field(default_factory=list)  # new settings applied through maps
    recompiled: list[str] = field(default_factory=list)
    detached: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)  # sections applied at next start
    seconds: float = 0.0


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        sinks: Sequence[Sink],
        probes: Sequence[str] | None = None,
        config_source: str = "config",
    ) -> None:
        self.config = config
        policies = compile_policies(config.policies, source=config_source)
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
        self.namespaces: NamespaceCache | None = None
        self._api_client: Any = None
        self.enricher = self._build_enricher()
        stages: list[Stage] = [self.process_table]
        if self.enricher is not None:
            stages.append(self.enricher)
        # Selection and rules after enrichment: they need the pod.
        self.resolver = SubjectResolver(self.cgroups, self.pods)
        self.kernel_selection = KernelSelection(self.resolver)
        self.policy_stage = PolicyStage(
            self.resolver, process_table=self.process_table, kernel=self.kernel_selection
        )
        self.policy_stage.install(policies)
        stages.append(self.policy_stage)
        self._probes_pinned = probes is not None
        self._reconfigure_lock = threading.RLock()
        self._reload_hooks: list[Callable[[AgentConfig], None]] = []
        self._running = False
        self.config_counters = {"reloads": 0, "rejected": 0}
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
            self._api_client = client
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

    def _compile_isolating_failures(
        self, probes: list[Probe], report: StartReport | ReloadReport | None = None
    ) -> None:
        report = report if report is not None else self.report
        try:
            self._modules.append(_Module(self._compile(probes), probes))
            return
        except (compiler.CompileError, ProbeError) as exc:
            if len(probes) == 1:
                report.failed[probes[0].name] = str(exc)
                return
            log.warning("compiling probes together failed; compiling one by one: %s", exc)
        for probe in probes:
            self._compile_isolating_failures([probe], report)

    def _attach_module(self, module: _Module, report: StartReport | ReloadReport) -> None:
        """Attach a freshly loaded module's probes and give it a reader (not started)."""
        # Selection maps first: the programs filter from their first event on.
        self.kernel_selection.add_module(module.compiled.bpf)
        attached = []
        for probe in module.probes:
            try:
                probe.attach(module.compiled.bpf)
            except ProbeError as exc:
                report.failed[probe.name] = str(exc)
                continue
            attached.append(probe)
            self.probes[probe.name] = probe
            report.attached.append(probe.name)
        module.probes = attached
        if attached:
            module.reader = RingBufferReader(
                module.compiled.bpf,
                attached,
                self.dispatcher.submit,
                drain_interval_ms=self.config.pipeline.drain_interval_ms,
            )

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
            self._attach_module(module, self.report)

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
        self._ensure_namespaces(self.policy_stage.policies)
        self.dispatcher.start()
        for module in self._modules:
            if module.reader is not None:
                module.reader.start()
        self.report.seconds = time.perf_counter() - started
        self._running = True
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
        with self._reconfigure_lock:  # a reload may be closing a module
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

    # -- live config ---------------------------------------------------------

    def on_reload(self, callback: Callable[[AgentConfig], None]) -> None:
        """Call `callback(config)` after each config is applied (e.g. export settings)."""
        self._reload_hooks.append(callback)

    def reload_text(self, text: str, *, source: str = "config") -> bool:
        """Apply a config file's new content; False (logged, counted) when it is rejected."""
        from vigil.agent.config_watch import parse_text

        try:
            config = parse_text(text, source=source)
        except ConfigError as exc:
            self._reject(exc)
            return False
        try:
            self.reload(config, source=source)
        except ConfigError:
            return False  # logged and counted by reload
        return True

    def _reject(self, exc: ConfigError) -> None:
        self.config_counters["rejected"] += 1
        log.error("new config rejected, the previous one stays in force: %s", exc)

    def reload(self, config: AgentConfig, *, source: str = "config") -> ReloadReport:
        """Apply `config` without restarting; ConfigError (logged, counted) leaves all as is."""
        with self._reconfigure_lock:
            report = ReloadReport()
            if self._stopped.is_set():
                log.debug("config %s not applied: the agent is stopping", source)
                return report
            if config == self.config:
                log.debug("config %s unchanged", source)
                return report
            started = time.perf_counter()
            try:
                policies = compile_policies(config.policies, source=source)
            except ConfigError as exc:
                self._reject(exc)
                raise
            report.restart_needed = [
                section
                for section in ("enrichment", "pipeline")
                if getattr(config, section) != getattr(self.config, section)
            ]
            if self._running:
                self._apply_probes(config, report)
            self.config = config
            self.policy_stage.install(policies)
            if self._running:
                self._ensure_namespaces(policies)
            for hook in self._reload_hooks:
                try:
                    hook(config)
                except Exception:
                    log.exception("config reload hook %r failed", hook)
            self.config_counters["reloads"] += 1
            report.seconds = time.perf_counter() - started
            self._log_reload(source, policies, report)
            return report

    def _log_reload(self, source: str, policies: PolicySet, report: ReloadReport) -> None:
        changes = [
            f"{what} {', '.join(names)}"
            for what, names in (
                ("attached", report.attached),
                ("updated", report.updated),
                ("recompiled", report.recompiled),
                ("detached", report.detached),
            )
            if names
        ]
        log.info(
            "config %s applied in %.2fs: %s; %d policies, %d rules",
            source,
            report.seconds,
            "; ".join(changes) or "probes unchanged",
            len(policies.policies),
            policies.rule_count,
        )
        for name, reason in report.failed.items():
            log.error("probe %s not running after the config change: %s", name, reason)
        if report.restart_needed:
            log.warning(
                "config %s: changes to %s take effect at the next restart",
                source,
                ", ".join(report.restart_needed),
            )

    def _apply_probes(self, config: AgentConfig, report: ReloadReport) -> None:
        """Bring the running probes in line with `config` (lock held, agent running)."""
        desired = self.probe_names if self._probes_pinned else config.probes.enabled()
        running = {name: probe for name, probe in self.probes.items() if not probe.metadata}
        context = ProbeContext(clock=self.clock)
        fresh: list[Probe] = []
        replacing: dict[str, Probe] = {}
        for name in desired:
            settings = getattr(config.probes, name)
            current = running.get(name)
            if current is not None:
                if settings == current.config:
                    continue
                if current.update_config(settings):
                    report.updated.append(name)
                    continue
            try:
                probe = registry.create(name, context, config)
            except ProbeError as exc:
                report.failed[name] = str(exc)
                continue
            if current is not None:
                probe.counters = current.counters  # one running count per probe name
                replacing[name] = current
            fresh.append(probe)

        if fresh:
            first_new = len(self._modules)
            self._compile_isolating_failures(fresh, report)
            for module in self._modules[first_new:]:
                self._attach_module(module, report)
                if module.reader is not None:
                    module.reader.start()
                else:
                    self._close_module(module)  # nothing attached
        for name, old in replacing.items():
            if self.probes.get(name) is old:
                log.error("probe %s keeps its previous settings: the new ones failed", name)
                continue
            # The new instance runs already: no gap, at most a few events seen twice.
            report.recompiled.append(name)
            report.attached.remove(name)
            self._retire(old)
        for name, probe in running.items():
            if name not in desired:
                self._retire(probe)
                del self.probes[name]
                report.detached.append(name)

    def _retire(self, probe: Probe) -> None:
        """Detach one probe; close its module when none of the module's probes runs."""
        probe.detach()
        for module in list(self._modules):
            if probe in module.probes:
                module.probes.remove(probe)
                if not any(p.attached for p in module.probes):
                    self._close_module(module)

    def _close_module(self, module: _Module) -> None:
        """Drain and unload one module while the rest keeps running."""
        self.kernel_selection.remove_module(module.compiled.bpf)
        if module.reader is not None:
            module.reader.stop()  # drains what its ring buffers still hold
        try:
            module.compiled.close()
        except Exception as exc:
            log.warning("unloading BPF module failed: %s", exc)
        self._modules.remove(module)

    def _ensure_namespaces(self, policies: PolicySet) -> None:
        """Start listing namespace labels the first time a policy selects namespaces."""
        if not policies.needs_namespace_labels or self.namespaces is not None:
            return
        if self._api_client is None:
            log.warning(
                "a policy selects namespaces by label but there is no Kubernetes API access: "
                "it selects nothing"
            )
            return
        self.namespaces = NamespaceCache(api_client=self._api_client)
        self.resolver.namespaces = self.namespaces
        self.namespaces.start()

    # -- stop ----------------------------------------------------------------

    def stop(self) -> None:
        """Detach, drain the ring buffers, flush the pipeline and sinks, unload."""
        self._stopped.set()
        with self._reconfigure_lock:
            self._running = False  # a reload in progress has finished; later ones do nothing
        if self.pod_watcher is not None:
            self.pod_watcher.stop()
        if self.namespaces is not None:
            self.namespaces.stop()
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
        with self._reconfigure_lock:
            probes = dict(self.probes)
        counters = {name: probe.counters.as_dict() for name, probe in probes.items()}
        if self.enricher is not None:
            counters["enrichment"] = self.enricher.counters.as_dict()
        if self.pod_watcher is not None:
            counters["kubernetes"] = dict(self.pod_watcher.counters)
        if self.namespaces is not None:
            counters["namespaces"] = dict(self.namespaces.counters)
        counters["config"] = dict(self.config_counters)
        counters["selection"] = {
            **self.policy_stage.counters.as_dict(),
            **{f"kernel_{k}": v for k, v in self.kernel_selection.counters.items()},
        }
        counters["rules"] = self.policy_stage.rules.counters.as_dict()
        return counters
