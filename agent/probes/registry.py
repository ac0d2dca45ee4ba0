"""Probe name -> implementation, imported only when the probe is enabled.

The names are the fields of vigil.api.probes.Probes; each probe's settings
are the field of that name in the agent's config.
"""

from __future__ import annotations

import importlib

from vigil.agent.probes.base import Probe, ProbeContext, ProbeError
from vigil.api.config import AgentConfig

PROBES: dict[str, str] = {
    "process": "vigil.agent.probes.process:ProcessProbe",
    "tcp": "vigil.agent.probes.tcp:TcpProbe",
    "runqlat": "vigil.agent.probes.runqlat:RunqlatProbe",
    "syscalls": "vigil.agent.probes.syscalls:SyscallsProbe",
    "oom": "vigil.agent.probes.oom:OomProbe",
    "process_state": "vigil.agent.probes.process_state:ProcessStateProbe",
    "tracepoints": "vigil.agent.probes.tracepoints:TracepointsProbe",
}


def probe_class(name: str) -> type[Probe]:
    module_name, _, class_name = PROBES[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProbeError(f"probe {name} is not available in this build: {exc}") from exc
    cls: type[Probe] = getattr(module, class_name)
    return cls


def create(name: str, context: ProbeContext, config: AgentConfig) -> Probe:
    """Instantiate probe `name` with its section of `config.probes`."""
    return probe_class(name)(context, getattr(config.probes, name))
