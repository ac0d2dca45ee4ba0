"""The running agent: wire the parts, start them, apply new configs, stop cleanly.

The Agent builds the pipeline (process table, enrichment, selection and
rules, the dispatcher) and hands the probe lifecycle to its Supervisor
(vigil.agent.supervisor). Shutdown detaches every program first, then
drains what the ring buffers still hold, so no event seen before the stop
is lost.

A new config applies without a restart (``reload``): the supervisor brings
the probes in line, and policies (selection and rules) are swapped in one
step. An invalid config is rejected and counted; the one in force stays.

What exporters read of the running agent goes through its Readings
(vigil.agent.pipeline.readings), filled here: nothing holds the Agent.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from vigil.agent.checks.kube_events import KubeEvents
from vigil.agent.checks.runner import CheckRunner
from vigil.agent.enrich.attribution import Enricher
from vigil.agent.enrich.cgroups import CgroupTable
from vigil.agent.enrich.namespaces import NamespaceCache
from vigil.agent.enrich.pods import PodCache, PodWatcher, api_client_from_environment
from vigil.agent.enrich.processes import ProcessTable
from vigil.agent.enrich.workloads import Workloads, api_fetch
from vigil.agent.kernel import mounts
from vigil.agent.pipeline.dispatch import Dispatcher, Stage
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.sink import Sink
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes import registry
from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.agent.probes.cgroups import CgroupProbe
from vigil.agent.probes.process import ProcessProbe
from vigil.agent.selection.capture import widened
from vigil.agent.selection.kernel import KernelSelection
from vigil.agent.selection.policies import PolicySet, compile_policies
from vigil.agent.selection.stage import PolicyStage
from vigil.agent.selection.subjects import SubjectResolver
from vigil.agent.supervisor import ReloadReport, StartReport, Supervisor
from vigil.api.checks import parse_duration
from vigil.api.config import AgentConfig, ConfigError, parse_text

__all__ = ["Agent", "AgentError", "ReloadReport", "StartReport"]

log = logging.getLogger("vigil.agent")

HOUSEKEEPING_SECONDS = 1.0


class AgentError(RuntimeError):
    """The agent cannot run at all (no probe could be attached)."""


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        sinks: Sequence[Sink],
        probes: Sequence[str] | None = None,
        config_source: str = "config",
        readings: Readings | None = None,
    ) -> None:
        """`readings` is what exporters were handed to read this agent by (filled here)."""
        self.config = config
        self.readings = readings if readings is not None else Readings()
        self.sinks = list(sinks)
        self._probes_pinned = probes is not None
        self.probe_names = list(probes) if probes is not None else config.running_probes()
        policies = self._compile(config, config_source)
        unknown = sorted(set(self.probe_names) - registry.PROBES.keys())
        if unknown:
            known = ", ".join(registry.PROBES)
            raise AgentError(f"unknown probe(s) {', '.join(unknown)}; known: {known}")
        self.clock = MonotonicClock()
        self.process_table = ProcessTable(config.pipeline.process_table_size)
        self.cgroups: CgroupTable | None = None
        self.pods: PodCache | None = None
        self.pod_watcher: PodWatcher | None = None
        self.workloads: Workloads | None = None
        self.namespaces: NamespaceCache | None = None
        self._api_client: Any = None
        self.node_name: str | None = None
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
        # Checks last: they count what was selected, and their own events skip selection.
        self.checks = CheckRunner(self.readings, self.resolver, node_name=self.node_name)
        self.checks.configure(config, self.probe_names, policies, source=config_source)
        self.readings.add_source(self.checks.status)
        self.kube_events: KubeEvents | None = None
        if self._api_client is not None and config.check_settings.kubernetes_events:
            settings = config.check_settings
            self.kube_events = KubeEvents(
                self._api_client,
                node_name=self.node_name,
                min_interval=parse_duration(settings.event_min_interval),
            )
            self.checks.notifiers.append(self.kube_events)
        stages.append(self.checks.stage)
        self._reconfigure_lock = threading.RLock()
        self._reload_hooks: list[Callable[[AgentConfig], None]] = []
        self._running = False
        self.config_counters = {"reloads": 0, "rejected": 0}
        self.dispatcher = Dispatcher(stages, self.sinks, max_batches=config.pipeline.queue_batches)
        self.supervisor = Supervisor(
            context=ProbeContext(clock=self.clock),
            deliver=self.dispatcher.submit,
            selection=self.kernel_selection,
            readings=self.readings,
            drain_interval_ms=config.pipeline.drain_interval_ms,
        )
        self._stopped = threading.Event()
        self.report = StartReport()
        self._register_counters()

    def _register_counters(self) -> None:
        """Stage counters for the readings (closures over the parts, never over the agent)."""
        readings, stage, selection = self.readings, self.policy_stage, self.kernel_selection
        if self.enricher is not None:
            readings.count("enrichment", self.enricher.counters.as_dict)
        if self.pod_watcher is not None:
            watch_counters = self.pod_watcher.counters
            owner_counters = self.workloads.counters if self.workloads else {}
            readings.count("kubernetes", lambda: {**watch_counters, **owner_counters})
        config_counters = self.config_counters
        readings.count("config", lambda: dict(config_counters))
        readings.count(
            "selection",
            lambda: {
                **stage.counters.as_dict(),
                **{f"kernel_{k}": v for k, v in selection.counters.items()},
            },
        )
        readings.count("rules", stage.rules.counters.as_dict)
        checks, engine = self.checks.counters, self.checks.engine.counters
        posted = self.kube_events.counters if self.kube_events is not None else {}
        readings.count("checks", lambda: {**checks, **engine.as_dict(), **posted})

    @property
    def running(self) -> bool:
        """Started (every probe that could be attached is) and not stopping."""
        return self._running

    def requested_probes(self) -> list[str]:
        """The probes asked for: --probes, else the config's enabled ones."""
        return list(self.probe_names if self._probes_pinned else self.config.probes.enabled())

    @property
    def probes(self) -> dict[str, Probe]:
        """The attached probes by name (the supervisor's, live)."""
        return self.supervisor.probes

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
        self.node_name = node_name
        if k8s.mode != "off":
            try:
                client = api_client_from_environment(k8s.kubeconfig)
            except ValueError as exc:
                raise AgentError(f"enrichment.kubernetes.kubeconfig: {exc}") from None
            self._api_client = client
            if client is not None and node_name:
                self.workloads = Workloads(api_fetch(client))
                self.pods = PodCache(workloads=self.workloads)
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

    def start(self) -> StartReport:
        started = time.perf_counter()
        if mounts.ensure_tracefs() is None:
            raise AgentError(
                "tracefs is not mounted at /sys/kernel/tracing and cannot be: run as root, "
                "or in a container mount the host's /sys/kernel/tracing (read-only is enough)"
            )
        self.process_table.seed_from_proc()
        context = self.supervisor.context
        wanted = []
        for name in self.probe_names:
            try:
                wanted.append(registry.create(name, context, widened(self.config)))
            except ProbeError as exc:
                self.report.failed[name] = str(exc)
        if self.enricher is not None:
            wanted.append(CgroupProbe(context))
        self.supervisor.start(wanted, self.report)

        for name, reason in self.report.failed.items():
            log.error("probe %s not running: %s", name, reason)
        if not self.probes:
            self.supervisor.close()
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
        self.supervisor.start_readers()
        self.checks.start()
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
            self.supervisor.read_kernel_drops()

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

    def _compile(self, config: AgentConfig, source: str) -> PolicySet:
        """The config's policies over what the node observes for everyone.

        Probes named with --probes are the host operator's choice: node-wide.
        """
        node_wide = (
            frozenset(self.probe_names) if self._probes_pinned else config.node_wide_probes()
        )
        return compile_policies(
            config.policies,
            source=source,
            node_wide=node_wide,
            node_args=config.probes.process.args,
        )

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
                policies = self._compile(config, source)
            except ConfigError as exc:
                self._reject(exc)
                raise
            report.restart_needed = [
                section
                for section in ("enrichment", "pipeline", "endpoint")
                if getattr(config, section) != getattr(self.config, section)
            ]
            if self._running:
                desired = self.probe_names if self._probes_pinned else config.running_probes()
                self.supervisor.apply(widened(config), desired, report)
            self.config = config
            self.policy_stage.install(policies)
            desired_checks = self.probe_names if self._probes_pinned else config.probes.enabled()
            self.checks.configure(config, desired_checks, policies, source=source)
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
        self.namespaces = namespaces = NamespaceCache(api_client=self._api_client)
        self.resolver.namespaces = namespaces
        self.readings.count("namespaces", lambda: dict(namespaces.counters))
        namespaces.start()

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
        self.checks.stop()
        if self.kube_events is not None:
            self.kube_events.close()
        self.supervisor.detach()
        self.dispatcher.stop()
        # Sinks close before the BPF maps go: the last metric export still reads them.
        for sink in self.sinks:
            sink.close()
        self.supervisor.close()

    def counters(self) -> dict[str, dict[str, int]]:
        """Self-counters: per probe, then enrichment, the pod watch, config, selection, rules."""
        return self.readings.counters()
