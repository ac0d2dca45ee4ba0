"""The probe lifecycle: compile, attach, reload and retire, each module with its reader.

Start-up compiles the enabled probes' C files together (one clang run); if
that fails it compiles them one by one to find the culprit, reports it, and
runs the rest. On a config change, probes whose settings did not change keep
running untouched; changed settings go through the probe's maps, or, when a
compile-time size changed, a new instance is compiled and attached before
the old one is detached; newly enabled probes compile into a module of
their own; a module is closed once none of its probes runs.

After every change the running probes are published to the agent's
Readings, which is all the exporters see of them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from vigil.agent.kernel import compiler
from vigil.agent.pipeline.readings import Readings
from vigil.agent.pipeline.ringbuf import Deliver, RingBufferReader
from vigil.agent.probes import registry
from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.agent.selection.kernel import KernelSelection
from vigil.api.config import AgentConfig

log = logging.getLogger("vigil.agent")


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


@dataclass(slots=True)
class Module:
    """One compiled bcc module, the probes attached from it, and its ring buffer reader."""

    compiled: compiler.CompiledModule
    probes: list[Probe]
    reader: RingBufferReader | None = None


class Supervisor:
    """Owns every compiled module and attached probe of one agent.

    Not thread-safe by itself: the agent calls it under its reconfigure lock.
    """

    def __init__(
        self,
        *,
        context: ProbeContext,
        deliver: Deliver,
        selection: KernelSelection,
        readings: Readings,
        drain_interval_ms: int,
    ) -> None:
        self.context = context
        self._deliver = deliver
        self._selection = selection
        self._readings = readings
        self._drain_interval_ms = drain_interval_ms
        self.probes: dict[str, Probe] = {}
        self.modules: list[Module] = []

    # -- start ---------------------------------------------------------------

    def start(self, wanted: Sequence[Probe], report: StartReport) -> None:
        """Compile and attach `wanted`; readers are made, not started (see start_readers)."""
        self._compile_isolating_failures(list(wanted), report)
        for module in self.modules:
            self._attach_module(module, report)
        self._publish()

    def start_readers(self) -> None:
        for module in self.modules:
            if module.reader is not None:
                module.reader.start()

    def _compile(self, probes: list[Probe]) -> compiler.CompiledModule:
        members = {member for probe in probes for member in probe.members}
        offsets = compiler.resolve_fields(members)
        if offsets.missing:
            # Every member the shipped probes read is essential to them.
            raise ProbeError(
                f"not supported on {os.uname().release}: "
                "kernel struct members not resolvable from BTF: "
                + "; ".join(f"{name}: {why}" for name, why in sorted(offsets.missing.items()))
                + " (run `vigil-agent doctor`)"
            )
        defines: dict[str, int | str] = {}
        for probe in probes:
            defines.update(probe.defines())
        sources = compiler.module_sources(probe.source_file() for probe in probes)
        return compiler.compile_sources(sources, offsets=offsets, defines=defines)

    def _compile_isolating_failures(
        self, probes: list[Probe], report: StartReport | ReloadReport
    ) -> None:
        try:
            self.modules.append(Module(self._compile(probes), probes))
            return
        except (compiler.CompileError, ProbeError) as exc:
            if len(probes) == 1:
                report.failed[probes[0].name] = str(exc)
                return
            log.warning("compiling probes together failed; compiling one by one: %s", exc)
        for probe in probes:
            self._compile_isolating_failures([probe], report)

    def _attach_module(self, module: Module, report: StartReport | ReloadReport) -> None:
        """Attach a freshly loaded module's probes and give it a reader (not started)."""
        # Selection maps first: the programs filter from their first event on.
        self._selection.add_module(module.compiled.bpf)
        attached = []
        for probe in module.probes:
            try:
                probe.attach(module.compiled.bpf)
            except ProbeError as exc:
                report.failed[probe.name] = str(exc)
                continue
            attached.append(probe)
            self.probes[probe.name] = probe
            scope = probe.policy_scope()
            if scope is not None:
                self._selection.add_scope(module.compiled.bpf, *scope)
            report.attached.append(probe.name)
        module.probes = attached
        if attached:
            module.reader = RingBufferReader(
                module.compiled.bpf,
                attached,
                self._deliver,
                drain_interval_ms=self._drain_interval_ms,
            )

    def _publish(self) -> None:
        self._readings.publish(self.probes.values())

    # -- reload --------------------------------------------------------------

    def apply(self, config: AgentConfig, desired: Sequence[str], report: ReloadReport) -> None:
        """Bring the running probes in line with `config`: `desired` run, the rest retire."""
        running = {name: probe for name, probe in self.probes.items() if not probe.metadata}
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
                probe = registry.create(name, self.context, config)
            except ProbeError as exc:
                report.failed[name] = str(exc)
                continue
            if current is not None:
                probe.counters = current.counters  # one running count per probe name
                replacing[name] = current
            fresh.append(probe)

        if fresh:
            first_new = len(self.modules)
            self._compile_isolating_failures(fresh, report)
            for module in self.modules[first_new:]:
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
        self._publish()

    def _retire(self, probe: Probe) -> None:
        """Detach one probe; close its module when none of the module's probes runs."""
        probe.detach()
        for module in list(self.modules):
            if probe in module.probes:
                module.probes.remove(probe)
                if not any(p.attached for p in module.probes):
                    self._close_module(module)

    def _close_module(self, module: Module) -> None:
        """Drain and unload one module while the rest keeps running."""
        self._selection.remove_module(module.compiled.bpf)
        if module.reader is not None:
            module.reader.stop()  # drains what its ring buffers still hold
        _unload(module)
        self.modules.remove(module)

    # -- run -----------------------------------------------------------------

    def read_kernel_drops(self) -> None:
        """Refresh each probe's kernel drop counters; log what the kernel dropped since."""
        for probe in self.probes.values():
            before = probe.counters.dropped_kernel
            probe.read_kernel_drops()
            if probe.counters.dropped_kernel > before:
                log.warning(
                    "probe %s: %d records dropped in the kernel (ring buffer full)",
                    probe.name,
                    probe.counters.dropped_kernel - before,
                )

    # -- stop ----------------------------------------------------------------

    def detach(self) -> None:
        """Detach every probe, take the final drop counts, drain every reader."""
        for probe in self.probes.values():
            probe.detach()
        for probe in self.probes.values():
            probe.read_kernel_drops()
        for module in self.modules:
            if module.reader is not None:
                module.reader.stop()

    def close(self) -> None:
        """Unload every module (after detach, once nothing reads the maps any more)."""
        for module in self.modules:
            _unload(module)
        self.modules.clear()


def _unload(module: Module) -> None:
    try:
        module.compiled.close()
    except Exception as exc:
        log.warning("unloading BPF module failed: %s", exc)
