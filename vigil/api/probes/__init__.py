"""Every probe's settings, one module per probe (vigil/api/probes/<name>.py)."""

from __future__ import annotations

from vigil.api.base import ApiModel
from vigil.api.probes.oom import OomProbe
from vigil.api.probes.process import ProcessProbe
from vigil.api.probes.process_state import ProcessStateProbe
from vigil.api.probes.runqlat import RunqlatProbe
from vigil.api.probes.syscalls import SyscallsProbe
from vigil.api.probes.tcp import TcpProbe
from vigil.api.probes.tracepoints import TracepointsProbe


class Probes(ApiModel):
    """Probe name -> settings; the field names are the names `--probes` takes."""

    process: ProcessProbe = ProcessProbe()
    tcp: TcpProbe = TcpProbe()
    runqlat: RunqlatProbe = RunqlatProbe()
    syscalls: SyscallsProbe = SyscallsProbe()
    oom: OomProbe = OomProbe()
    process_state: ProcessStateProbe = ProcessStateProbe()
    tracepoints: TracepointsProbe = TracepointsProbe()

    def enabled(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name).enabled]
