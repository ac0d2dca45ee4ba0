"""Decoding tcp close records built byte by byte, as bpf/tcp.bpf.c lays them out."""

from __future__ import annotations

import errno
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.timefmt import MonotonicClock
from vigil.agent.probes.base import DecodeError, ProbeContext
from vigil.agent.probes.tcp import (
    BYTES,
    CONNECTIONS,
    DURATION,
    F_OPEN_SEEN,
    F_OWNER_KNOWN,
    FAILURES,
    KIND,
    RECORD,
    TcpProbe,
)
from vigil.api.config import ConfigError, parse_config

AF_INET, AF_INET6 = 2, 10
ESTABLISHED, SYN_SENT, FIN_WAIT2, LAST_ACK = 1, 2, 5, 9


def _probe(**settings: object) -> TcpProbe:
    config = parse_config({"probes": {"tcp": {"enabled": True, **settings}}})
    return TcpProbe(ProbeContext(clock=MonotonicClock()), config.probes.tcp)


def _record(
    *,
    family: int = AF_INET,
    local: str = "10.1.2.3",
    peer: str = "10.9.8.7",
    flags: int = F_OWNER_KNOWN | F_OPEN_SEEN,
    direction: int = 1,
    oldstate: int = FIN_WAIT2,
    error: int = 0,
) -> bytes:
    def packed(address: str) -> bytes:
        kind = socket.AF_INET6 if ":" in address else socket.AF_INET
        return socket.inet_pton(kind, address).ljust(16, b"\0")

    return RECORD.struct.pack(
        5_000_000,  # ts
        1_000_000,  # start_ns
        777,  # cgroup id
        1234,  # bytes sent
        5678,  # bytes received
        99,  # bytes retransmitted
        4242,  # pid
        3,  # retransmitted segments
        error,
        family,
        40000,  # local port
        443,  # peer port
        0,
        direction,
        flags,
        oldstate,
        0,
        packed(local),
        packed(peer),
        b"curl\0\0\0\0\0\0\0\0\0\0\0\0",
    )


def test_an_established_client_connection() -> None:
    probe = _probe()
    event = probe.decode(_record())
    assert event.kind == KIND
    assert event.time_ns == probe.context.clock.to_wall_ns(5_000_000)
    assert event.attributes == {
        "network.transport": "tcp",
        "network.type": "ipv4",
        "network.local.address": "10.1.2.3",
        "network.local.port": 40000,
        "network.peer.address": "10.9.8.7",
        "network.peer.port": 443,
        "vigil.tcp.direction": "client",
        "vigil.tcp.bytes_sent": 1234,
        "vigil.tcp.bytes_received": 5678,
        "vigil.tcp.retransmits": 3,
        "vigil.cgroup.id": 777,
        "vigil.tcp.duration_ns": 4_000_000,
        "process.pid": 4242,
        "process.executable.name": "curl",
    }


def test_ipv6_and_ipv4_mapped_addresses() -> None:
    probe = _probe()
    v6 = probe.decode(_record(family=AF_INET6, local="fd00::1", peer="2001:db8::2")).attributes
    assert (v6["network.type"], v6["network.local.address"], v6["network.peer.address"]) == (
        "ipv6",
        "fd00::1",
        "2001:db8::2",
    )
    mapped = probe.decode(
        _record(family=AF_INET6, local="::ffff:127.0.0.1", peer="::ffff:10.0.0.9")
    ).attributes
    assert (mapped["network.type"], mapped["network.local.address"]) == ("ipv4", "127.0.0.1")
    assert mapped["network.peer.address"] == "10.0.0.9"


def test_a_refused_connect() -> None:
    attrs = _probe().decode(_record(oldstate=SYN_SENT, error=111)).attributes
    assert attrs["vigil.tcp.failed"] is True
    assert attrs["error.type"] == "ECONNREFUSED"


def test_a_connection_the_agent_did_not_see_open() -> None:
    attrs = _probe().decode(_record(flags=0, direction=0, oldstate=LAST_ACK)).attributes
    assert attrs["vigil.tcp.untracked"] is True
    assert attrs["vigil.tcp.owner_unknown"] is True
    assert attrs["vigil.tcp.direction"] == "unknown"
    for absent in ("process.pid", "process.executable.name", "vigil.tcp.duration_ns"):
        assert absent not in attrs


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        (_record()[:-1], "needs 120"),
        (_record(family=1), "unknown address family 1"),
        (_record(direction=3), "unknown direction 3"),
    ],
)
def test_malformed_records_are_decode_errors(record: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        _probe().decode(record)


def test_event_metrics() -> None:
    ok = _probe().decode(_record())
    failed = _probe().decode(_record(oldstate=SYN_SENT, error=111))

    def values(event: Event) -> dict[tuple[str, str], float | None]:
        return {
            (m.spec.name, str(m.constant_attributes.get("network.io.direction", ""))): m.value(
                event
            )
            for m in TcpProbe.event_metrics
        }

    assert values(ok) == {
        (CONNECTIONS.name, ""): 1,
        (FAILURES.name, ""): None,
        (BYTES.name, "transmit"): 1234,
        (BYTES.name, "receive"): 5678,
        (DURATION.name, ""): pytest.approx(0.004),
    }
    assert values(failed)[(CONNECTIONS.name, "")] is None
    assert values(failed)[(FAILURES.name, "")] == 1
    for metric in TcpProbe.event_metrics:
        assert "network.peer.address" not in metric.attributes  # unbounded: events only
        assert metric.kind == KIND


def test_live_and_reload_settings() -> None:
    probe = _probe()
    quiet = probe.config.model_copy(update={"retransmits": False})
    assert probe.update_config(quiet) is True  # not attached: nothing to write yet
    assert probe.config.retransmits is False
    for change in ({"max_connections": 2048}, {"max_cgroups": 32}, {"accept_owner": False}):
        assert probe.update_config(probe.config.model_copy(update=change)) is False
    assert probe.config == quiet


def test_accept_owner_off_leaves_out_the_syscall_hooks() -> None:
    assert {h.tracepoint for h in _probe().enabled_hooks()} == {
        "sock:inet_sock_set_state",
        "tcp:tcp_retransmit_skb",
        "syscalls:sys_exit_accept4",
        "syscalls:sys_exit_accept",
    }
    assert {h.tracepoint for h in _probe(acceptOwner=False).enabled_hooks()} == {
        "sock:inet_sock_set_state",
        "tcp:tcp_retransmit_skb",
    }


def test_settings_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"probes\.tcp\.maxConnections: .*greater than or equal"):
        parse_config({"probes": {"tcp": {"maxConnections": 10}}})
    with pytest.raises(ConfigError, match=r"probes\.tcp\.ringBuffer\.pages: .*power of two"):
        parse_config({"probes": {"tcp": {"ringBuffer": {"pages": 3}}}})


def _reference_decode(record: bytes, offset_ns: int) -> Event:
    """The decoder as it was before the fast path (all fields, plain lookups): the oracle."""
    if len(record) < RECORD.size:
        raise DecodeError(f"record of {len(record)} bytes, needs {RECORD.size}")
    names = [name for name, _ in RECORD.fields]
    f = dict(zip(names, RECORD.struct.unpack_from(record), strict=True))
    if f["family"] not in (AF_INET, AF_INET6):
        raise DecodeError(f"unknown address family {f['family']}")
    if f["direction"] >= 3:
        raise DecodeError(f"unknown direction {f['direction']}")

    def address(raw: bytes) -> tuple[str, bool]:
        if f["family"] == AF_INET:
            return socket.inet_ntop(socket.AF_INET, raw[:4]), True
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            return socket.inet_ntop(socket.AF_INET, raw[12:]), True
        return socket.inet_ntop(socket.AF_INET6, raw), False

    local, _ = address(f["saddr"])
    peer, peer_v4 = address(f["daddr"])
    attrs: dict[str, object] = {
        "network.transport": "tcp",
        "network.type": "ipv4" if peer_v4 else "ipv6",
        "network.local.address": local,
        "network.local.port": f["sport"],
        "network.peer.address": peer,
        "network.peer.port": f["dport"],
        "vigil.tcp.direction": ("unknown", "client", "server")[f["direction"]],
        "vigil.tcp.bytes_sent": f["bytes_sent"],
        "vigil.tcp.bytes_received": f["bytes_received"],
        "vigil.tcp.retransmits": f["total_retrans"],
        "vigil.cgroup.id": f["cgroup_id"],
    }
    if f["flags"] & F_OPEN_SEEN:
        attrs["vigil.tcp.duration_ns"] = f["ts"] - f["start_ns"]
    else:
        attrs["vigil.tcp.untracked"] = True
    if f["flags"] & F_OWNER_KNOWN:
        attrs["process.pid"] = f["pid"]
        attrs["process.executable.name"] = f["comm"].split(b"\0", 1)[0].decode(errors="replace")
    else:
        attrs["vigil.tcp.owner_unknown"] = True
    if f["oldstate"] in (2, 3):
        attrs["vigil.tcp.failed"] = True
    if f["error"]:
        attrs["error.type"] = errno.errorcode.get(f["error"], str(f["error"]))
    return Event(KIND, f["ts"] + offset_ns, attrs)  # type: ignore[arg-type]


_ADDRESSES = st.one_of(
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=4, max_size=4).map(lambda v4: b"\0" * 10 + b"\xff\xff" + v4),
    st.binary(min_size=4, max_size=4).map(lambda v4: v4 + b"\0" * 12),
)
_RECORDS = st.builds(
    lambda values: RECORD.struct.pack(*values),
    st.tuples(
        *(st.integers(0, 2**64 - 1) for _ in range(6)),  # ts .. bytes_retrans
        st.integers(0, 2**32 - 1),  # pid
        st.integers(0, 2**32 - 1),  # total_retrans
        st.sampled_from([0, 1, 104, 110, 111, 4095, -5]),  # error (4095: no errno name)
        st.sampled_from([AF_INET, AF_INET6, AF_INET6, 0, 1]),  # family (some invalid)
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 65535),
        st.integers(0, 4),  # direction (3, 4 invalid)
        st.integers(0, 255),  # flags
        st.integers(0, 12),  # oldstate
        st.integers(0, 255),
        _ADDRESSES,
        _ADDRESSES,
        st.binary(min_size=16, max_size=16),  # comm, NUL or not, any bytes
    ),
)


@given(st.lists(_RECORDS | st.binary(max_size=RECORD.size + 8), max_size=12))
def test_fast_decode_matches_the_reference(records: list[bytes]) -> None:
    """decode and decode_batch give exactly what the straightforward decoder gives."""
    probe = _probe()
    offset = probe.context.clock.offset_ns
    expected: list[Event] = []
    errors = 0
    for record in records:
        try:
            expected.append(_reference_decode(record, offset))
        except DecodeError as exc:
            errors += 1
            with pytest.raises(DecodeError, match=str(exc)):
                probe.decode(record)
        else:
            assert probe.decode(record) == expected[-1]
    assert probe.decode_batch(records) == expected
    assert probe.counters.decode_errors == errors
