"""Settings of the `tcp` probe: TCP connections: who opened them, direction, addresses, bytes and
duration at close.
"""

from __future__ import annotations

from vigil.api.base import ApiModel


class TcpProbe(ApiModel):
    enabled: bool = False
