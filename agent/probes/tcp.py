"""The `tcp` probe: one `network.tcp.close` event per TCP connection, and retransmits per cgroup.

Kernel side: bpf/tcp.bpf.c, whose header comment lists what is reported when
(opens not seen, failed connects, TIME_WAIT, how bytes are counted). The owner
of a connection is the process that called connect() or accept(): captured in
that process's context, because the close runs in softirq context.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import socket
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from vigil.agent.kernel import features, mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.samples import EventMetric, MetricPoint, registered
from vigil.agent.probes.base import DecodeError, Hook, Probe, RecordLayout
from vigil.api import metrics
from vigil.api.attributes import (
    ERROR_TYPE,
    NETWORK_IO_DIRECTION,
    NETWORK_LOCAL_ADDRESS,
    NETWORK_LOCAL_PORT,
    NETWORK_PEER_ADDRESS,
    NETWORK_PEER_PORT,
    NETWORK_TRANSPORT,
    NETWORK_TYPE,
    PROCESS_EXECUTABLE_NAME,
    PROCESS_PID,
    VIGIL_CGROUP_ID,
    VIGIL_TCP_BYTES_RECEIVED,
    VIGIL_TCP_BYTES_SENT,
    VIGIL_TCP_DIRECTION,
    VIGIL_TCP_DURATION_NS,
    VIGIL_TCP_FAILED,
    VIGIL_TCP_OWNER_UNKNOWN,
    VIGIL_TCP_RETRANSMITS,
    VIGIL_TCP_UNTRACKED,
)
from vigil.api.events import AttributeValue
from vigil.api.probes.tcp import TcpProbe as TcpProbeConfig

log = logging.getLogger(__name__)

KIND = "network.tcp.close"

AF_INET, AF_INET6 = 2, 10
SYN_SENT, SYN_RECV = 2, 3
DIRECTIONS = ("unknown", "client", "server")
F_OWNER_KNOWN = 1 << 0
F_OPEN_SEEN = 1 << 1
_MAPPED_V4 = b"\0" * 10 + b"\xff\xff"

# struct tcp_record in bpf/tcp.bpf.c.
RECORD = RecordLayout(
    [
        ("ts", "Q"),
        ("start_ns", "Q"),
        ("cgroup_id", "Q"),
        ("bytes_sent", "Q"),
        ("bytes_received", "Q"),
        ("bytes_retrans", "Q"),
        ("pid", "I"),
        ("total_retrans", "I"),
        ("error", "i"),
        ("family", "H"),
        ("sport", "H"),
        ("dport", "H"),
        ("reserved16", "H"),
        ("direction", "B"),
        ("flags", "B"),
        ("oldstate", "B"),
        ("reserved8", "B"),
        ("saddr", "16s"),
        ("daddr", "16s"),
        ("comm", "16s"),
    ]
)

CONNECTIONS = registered(metrics.TCP_CONNECTIONS)
FAILURES = registered(metrics.TCP_CONNECTION_FAILURES)
BYTES = registered(metrics.TCP_BYTES)
DURATION = registered(metrics.TCP_CONNECTION_DURATION)
RETRANSMITS = registered(metrics.TCP_RETRANSMITS)


def _established(event: Event) -> float | None:
    return None if event.attributes.get(VIGIL_TCP_FAILED) else 1


def _failed(event: Event) -> float | None:
    return 1 if event.attributes.get(VIGIL_TCP_FAILED) else None


def _attribute(key: str, *, scale: float = 1.0) -> Any:
    def value(event: Event) -> float | None:
        found = event.attributes.get(key)
        return found * scale if isinstance(found, int) else None

    return value


# Few distinct addresses and names recur across many connections: formatting
# each once is what keeps decoding cheap on a connection storm. One-argument
# caches: the raw bytes are the key, no key tuple is built per lookup.
@functools.lru_cache(maxsize=4096)
def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw[:4])


@functools.lru_cache(maxsize=4096)
def _ipv6(raw: bytes) -> tuple[str, bool]:
    """(text, is IPv4): an IPv4-mapped IPv6 address is reported as the IPv4 one."""
    if raw[:12] == _MAPPED_V4:
        return socket.inet_ntop(socket.AF_INET, raw[12:]), True
    return socket.inet_ntop(socket.AF_INET6, raw), False


@functools.lru_cache(maxsize=4096)
def _comm(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


# The fields the event uses, in RECORD's order; the others become pad bytes so
# unpacking builds no objects for them, and the two addresses (adjacent) are
# one field: one cache lookup per connection. Derived from RECORD, never kept twice.
_UNUSED = frozenset({"bytes_retrans", "reserved16", "reserved8"})
_USED = struct.Struct(
    "<"
    + "".join(
        f"{struct.calcsize('<' + code)}x"
        if name in _UNUSED
        else "32s"
        if name == "saddr"
        else ""
        if name == "daddr"
        else code
        for name, code in RECORD.fields
    )
)
assert _USED.size == RECORD.size
assert RECORD.offsets()["daddr"] == RECORD.offsets()["saddr"] + 16

_DIRECTION_COUNT = len(DIRECTIONS)

# (family, local + peer address bytes) -> (network.type, local, peer), bounded.
_ENDPOINTS: dict[tuple[int, bytes], tuple[str, str, str]] = {}
_ENDPOINTS_MAX = 4096


def _endpoints(family: int, addresses: bytes) -> tuple[str, str, str]:
    if family == AF_INET:
        found = ("ipv4", _ipv4(addresses[:16]), _ipv4(addresses[16:]))
    elif family == AF_INET6:
        peer, peer_v4 = _ipv6(addresses[16:])
        found = ("ipv4" if peer_v4 else "ipv6", _ipv6(addresses[:16])[0], peer)
    else:
        raise DecodeError(f"unknown address family {family}")
    if len(_ENDPOINTS) >= _ENDPOINTS_MAX:
        _ENDPOINTS.clear()
    _ENDPOINTS[family, addresses] = found
    return found


def _event(offset_ns: int, record: bytes) -> Event:
    """The event of one record (only its used fields: see _USED); DecodeError if malformed."""
    if len(record) < RECORD.size:
        raise DecodeError(f"record of {len(record)} bytes, needs {RECORD.size}")
    (
        ts,
        start_ns,
        cgroup_id,
        bytes_sent,
        bytes_received,
        pid,
        total_retrans,
        error,
        family,
        sport,
        dport,
        direction,
        flags,
        oldstate,
        addresses,
        comm,
    ) = _USED.unpack_from(record)
    network_type, local, peer = _ENDPOINTS.get((family, addresses)) or _endpoints(family, addresses)
    if direction >= _DIRECTION_COUNT:
        raise DecodeError(f"unknown direction {direction}")
    attrs: dict[str, AttributeValue] = {
        NETWORK_TRANSPORT: "tcp",
        NETWORK_TYPE: network_type,
        NETWORK_LOCAL_ADDRESS: local,
        NETWORK_LOCAL_PORT: sport,
        NETWORK_PEER_ADDRESS: peer,
        NETWORK_PEER_PORT: dport,
        VIGIL_TCP_DIRECTION: DIRECTIONS[direction],
        VIGIL_TCP_BYTES_SENT: bytes_sent,
        VIGIL_TCP_BYTES_RECEIVED: bytes_received,
        VIGIL_TCP_RETRANSMITS: total_retrans,
        VIGIL_CGROUP_ID: cgroup_id,
    }
    if flags & F_OPEN_SEEN:
        attrs[VIGIL_TCP_DURATION_NS] = ts - start_ns
    else:
        attrs[VIGIL_TCP_UNTRACKED] = True
    if flags & F_OWNER_KNOWN:
        attrs[PROCESS_PID] = pid
        attrs[PROCESS_EXECUTABLE_NAME] = _comm(comm)
    else:
        attrs[VIGIL_TCP_OWNER_UNKNOWN] = True
    if oldstate in (SYN_SENT, SYN_RECV):
        attrs[VIGIL_TCP_FAILED] = True
    if error:
        attrs[ERROR_TYPE] = errno.errorcode.get(error, str(error))
    return Event(KIND, ts + offset_ns, attrs)


def retransmit_tracepoint_has_err(tracefs: Path | None) -> bool:
    """Newer kernels trace failed retransmit attempts too and say so in an `err` field."""
    if tracefs is None:
        return False
    fmt = tracefs / "events" / "tcp" / "tcp_retransmit_skb" / "format"
    try:
        return "int err;" in fmt.read_text()
    except OSError:
        return False


class TcpProbe(Probe):
    name: ClassVar[str] = "tcp"
    source: ClassVar[str] = "tcp.bpf.c"
    hooks: ClassVar[tuple[Hook, ...]] = (
        Hook("raw_tracepoint", "sock:inet_sock_set_state", "vigil_tcp_state"),
        Hook("tracepoint", "tcp:tcp_retransmit_skb", "vigil_tcp_retransmit"),
        Hook("tracepoint", "syscalls:sys_exit_accept4", "vigil_tcp_accept4"),
        Hook("tracepoint", "syscalls:sys_exit_accept", "vigil_tcp_accept"),
    )
    members: ClassVar[tuple[str, ...]] = (
        "tcp_sock.bytes_sent",
        "tcp_sock.bytes_retrans",
        "tcp_sock.bytes_received",
        "tcp_sock.total_retrans",
        "sock.sk_err",
        "sock.sk_protocol",
        "sock.__sk_common.skc_family",
        "inet_sock.inet_sport",
        "sock.__sk_common.skc_dport",
        "sock.__sk_common.skc_rcv_saddr",
        "sock.__sk_common.skc_daddr",
        "sock.__sk_common.skc_v6_rcv_saddr",
        "sock.__sk_common.skc_v6_daddr",
        "sock.__sk_common.skc_flags",
        "sock.__sk_common.skc_state",
        "sock.sk_cgrp_data.cgroup",
        "cgroup.kn",
        "kernfs_node.id",
        "task_struct.files",
        "files_struct.fdt",
        "fdtable.fd",
        "fdtable.max_fds",
        "file.private_data",
        "socket.file",
        "socket.sk",
        "sk_buff.cb",
        "tcp_skb_cb.tcp_gso_segs",
    )
    ring_buffers: ClassVar[tuple[str, ...]] = ("tcp_events",)
    drops_map: ClassVar[str | None] = "tcp_drops"
    event_metrics: ClassVar[tuple[EventMetric, ...]] = (
        EventMetric(CONNECTIONS, KIND, _established, attributes=(VIGIL_TCP_DIRECTION,)),
        EventMetric(FAILURES, KIND, _failed, attributes=(VIGIL_TCP_DIRECTION, ERROR_TYPE)),
        EventMetric(
            BYTES,
            KIND,
            _attribute(VIGIL_TCP_BYTES_SENT),
            attributes=(VIGIL_TCP_DIRECTION,),
            constant_attributes={NETWORK_IO_DIRECTION: "transmit"},
        ),
        EventMetric(
            BYTES,
            KIND,
            _attribute(VIGIL_TCP_BYTES_RECEIVED),
            attributes=(VIGIL_TCP_DIRECTION,),
            constant_attributes={NETWORK_IO_DIRECTION: "receive"},
        ),
        EventMetric(
            DURATION,
            KIND,
            _attribute(VIGIL_TCP_DURATION_NS, scale=1e-9),
            attributes=(VIGIL_TCP_DIRECTION,),
        ),
    )

    config: TcpProbeConfig

    def defines(self) -> dict[str, int | str]:
        defines: dict[str, int | str] = {
            "TCP_RINGBUF_PAGES": self.config.ring_buffer.pages,
            "TCP_CONNECTIONS_MAX": self.config.max_connections,
            "TCP_CGROUPS_MAX": self.config.max_cgroups,
        }
        if retransmit_tracepoint_has_err(mounts.tracefs_root()):
            defines["TCP_RETRANSMIT_HAS_ERR"] = 1
        return defines

    def enabled_hooks(self) -> tuple[Hook, ...]:
        hooks = self.hooks
        if self.config.accept_owner:
            tracefs = mounts.tracefs_root()
            missing = [h for h in hooks if not features.tracepoint_exists(tracefs, h.tracepoint)]
            if any(h.tracepoint.startswith("syscalls:") for h in missing):
                # Kernels built without syscall tracepoints: run without owners.
                log.warning(
                    "tcp: no syscall tracepoints (CONFIG_FTRACE_SYSCALLS): accepted "
                    "connections carry their listener's cgroup and no process"
                )
            else:
                return hooks
        return tuple(hook for hook in hooks if not hook.tracepoint.startswith("syscalls:"))

    def configure(self, bpf: Any) -> None:
        """Live settings: wake threshold and retransmit counting (no recompile)."""
        table = bpf[b"tcp_config"]
        leaf = table.Leaf()
        leaf.wake_bytes = self.config.ring_buffer.wake_bytes
        leaf.retransmits = int(self.config.retransmits)
        table[ctypes.c_int(0)] = leaf

    def update_config(self, config: TcpProbeConfig) -> bool:
        fixed = ("max_connections", "max_cgroups", "accept_owner")
        if config.ring_buffer.pages != self.config.ring_buffer.pages or any(
            getattr(config, name) != getattr(self.config, name) for name in fixed
        ):
            return False  # map sizes are compile-time; hooks change on reload
        self.config = config
        if self.bpf is not None:
            self.configure(self.bpf)
        return True

    def retransmit_counts(self) -> dict[int, int]:
        """cgroup id -> retransmitted segments of its sockets since the probe attached."""
        if self.bpf is None:
            return {}
        table = self.bpf[b"tcp_retransmits"]
        return {key.value: value.value for key, value in table.items()}

    def collect(self) -> list[MetricPoint]:
        return [
            MetricPoint(RETRANSMITS, {VIGIL_CGROUP_ID: cgroup_id}, count)
            for cgroup_id, count in sorted(self.retransmit_counts().items())
        ]

    # -- decoding ------------------------------------------------------------

    def decode(self, record: bytes) -> Event:
        return _event(self.context.clock.offset_ns, record)

    def decode_batch(self, records: Sequence[bytes]) -> list[Event]:
        """decode() over a batch, with the clock offset read once."""
        offset_ns = self.context.clock.offset_ns
        return self._decode_each(records, functools.partial(_event, offset_ns))
