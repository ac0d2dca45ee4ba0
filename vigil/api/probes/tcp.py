"""Settings of the `tcp` probe: TCP connections: who opened them, direction, addresses, bytes and
duration at close.
"""

from __future__ import annotations

from pydantic import Field

from vigil.api.base import ApiModel
from vigil.api.probes.common import RingBuffer


class TcpProbe(ApiModel):
    """One `network.tcp.close` event per connection, plus per-cgroup retransmit counters.

    Sizes (`ringBuffer.pages`, `maxConnections`, `maxCgroups`) and `acceptOwner`
    take effect by reloading the probe; the rest applies live.
    """

    enabled: bool = False
    ring_buffer: RingBuffer = RingBuffer()
    max_connections: int = Field(
        65536,
        ge=1024,
        le=4 * 1024 * 1024,
        description="open connections remembered with their owner (an LRU: a connection "
        "evicted from it is still reported at close, flagged vigil.tcp.untracked)",
    )
    accept_owner: bool = Field(
        True,
        description="record which process accept()ed a server connection, from the "
        "syscalls:sys_exit_accept/accept4 tracepoints. Enabling a syscall tracepoint sends "
        "every syscall on the node through the kernel's tracing path (measured: +8-13 ns "
        "per syscall). Off: server connections carry their listener's cgroup, no process",
    )
    retransmits: bool = Field(
        True, description="count retransmitted segments per cgroup (tcp:tcp_retransmit_skb)"
    )
    max_cgroups: int = Field(
        16384,
        ge=16,
        le=1024 * 1024,
        description="cgroups with a retransmit counter (an LRU: removed cgroups go first)",
    )
