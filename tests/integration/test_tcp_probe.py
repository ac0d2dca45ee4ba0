"""The tcp probe against the running kernel: exact owners, ports, cgroups and byte counts.

Servers and clients are separate processes in scratch cgroups, so every pid
and cgroup id asserted below is known exactly; each side counts the bytes it
moved itself and the probe must report the same numbers.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agent import CollectingSink, running, scratch_cgroup, spawn
from tests.support.bpf import compiled_alone, require_bpf, ring_buffer_layout
from tests.support.selection import kernel_selection
from vigil.agent.kernel import compiler, mounts
from vigil.agent.pipeline.events import Event
from vigil.agent.probes.tcp import KIND, RECORD, RETRANSMITS, TcpProbe
from vigil.agent.runtime import Agent
from vigil.api.config import parse_config

pytestmark = pytest.mark.bpf

TCP_ON = {"probes": {"tcp": {"enabled": True}}}

# argv: family host count incoming outgoing call. Prints its port, then the
# peer port of each connection it accepted, then waits for a line on stdin
# before the exchange.
SERVER = """
import ctypes, socket, sys
family, host, count, incoming, outgoing, call = sys.argv[1:7]
listener = socket.socket(getattr(socket, family))
if family == "AF_INET6":
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
listener.bind((host, 0))
listener.listen(16)
print(listener.getsockname()[1], flush=True)
libc = ctypes.CDLL(None, use_errno=True)
for _ in range(int(count)):
    if call == "accept":  # accept(2) itself (x86_64: 43); Python calls accept4(2)
        fd = libc.syscall(43, listener.fileno(), None, None)
        assert fd >= 0, ctypes.get_errno()
        conn = socket.socket(fileno=fd)
    else:
        conn, _ = listener.accept()
    print(conn.getpeername()[1], flush=True)
    if sys.stdin.readline() != "go\\n":  # hold the connection open until told
        sys.exit("no go")
    received = 0
    while received < int(incoming):
        chunk = conn.recv(65536)
        assert chunk, "the client closed early"
        received += len(chunk)
    assert received == int(incoming), received
    conn.sendall(b"s" * int(outgoing))
    conn.close()
"""

# argv: family host port count first rest incoming. Sends `first` bytes,
# prints its local port, waits for a line on stdin, sends `rest`, then reads
# until the server closes.
CLIENT = """
import socket, sys
family, host, port, count, first, rest, incoming = sys.argv[1:8]
for _ in range(int(count)):
    conn = socket.socket(getattr(socket, family))
    conn.connect((host, int(port)))
    conn.sendall(b"c" * int(first))
    print(conn.getsockname()[1], flush=True)
    if sys.stdin.readline() != "go\\n":
        sys.exit("no go")
    conn.sendall(b"c" * int(rest))
    received = 0
    while chunk := conn.recv(65536):
        received += len(chunk)
    assert received == int(incoming), received
    conn.close()
"""


@pytest.fixture(scope="module")
def tcp_agent() -> Iterator[tuple[Agent, CollectingSink]]:
    """The real agent with the tcp probe (and enrichment), loaded once for this module."""
    with running(parse_config(TCP_ON), ["tcp"]) as (agent, sink):
        assert "tcp" in agent.report.attached, agent.report.failed
        yield agent, sink


@pytest.fixture
def sink(tcp_agent: tuple[Agent, CollectingSink]) -> CollectingSink:
    return tcp_agent[1]


@pytest.fixture
def agent(tcp_agent: tuple[Agent, CollectingSink]) -> Agent:
    return tcp_agent[0]


def closes_of(pid: int) -> Callable[[Event], bool]:
    return lambda event: event.kind == KIND and event.attributes.get("process.pid") == pid


def closes_at(local_port: int, peer_port: int) -> Callable[[Event], bool]:
    def predicate(event: Event) -> bool:
        attrs = event.attributes
        return (
            event.kind == KIND
            and attrs.get("network.local.port") == local_port
            and attrs.get("network.peer.port") == peer_port
        )

    return predicate


def exactly(sink: CollectingSink, predicate: Callable[[Event], bool], count: int) -> list[Event]:
    """The `count` events matching, after giving a duplicate time to show up."""
    sink.wait_for(predicate, count=count, timeout=15)
    time.sleep(0.2)  # > the 50 ms drain interval
    found = sink.matching(predicate)
    assert len(found) == count, found
    return found


def comm(pid: int) -> str:
    return Path(f"/proc/{pid}/comm").read_text().strip()


def own_cgroup_id() -> int:
    root = mounts.cgroup2_root()
    assert root is not None
    path = Path("/proc/self/cgroup").read_text().split("0::", 1)[1].splitlines()[0]
    return (root / path.lstrip("/")).stat().st_ino


class Exchange:
    """A server and a client process, each in its own scratch cgroup.

    The server accepts `count` connections; on each the client sends `first`
    bytes, both wait for go(), then the client sends `rest` more and the
    server answers with `reply` bytes and closes first.
    """

    def __init__(
        self,
        server_cgroup: Path,
        client_cgroup: Path,
        *,
        count: int,
        first: int,
        rest: int,
        reply: int,
        server_family: str = "AF_INET",
        listen_host: str = "127.0.0.1",
        client_family: str = "AF_INET",
        connect_host: str = "127.0.0.1",
        accept_call: str = "accept4",
        server_prefix: tuple[str, ...] = (),
        client_prefix: tuple[str, ...] = (),
    ) -> None:
        self.count = count
        server_args = (server_family, listen_host, count, first + rest, reply, accept_call)
        self.server = spawn(
            [*server_prefix, sys.executable, "-c", SERVER, *map(str, server_args)],
            cgroup=server_cgroup,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self._line(self.server))
        client_args = (client_family, connect_host, self.port, count, first, rest, reply)
        self.client = spawn(
            [*client_prefix, sys.executable, "-c", CLIENT, *map(str, client_args)],
            cgroup=client_cgroup,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.client_ports: list[int] = []
        self.peer_ports_seen_by_server: list[int] = []

    @staticmethod
    def _line(process: subprocess.Popen[str]) -> str:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line, f"process {process.pid} exited early: {process.wait()}"
        return line.strip()

    @staticmethod
    def _go(process: subprocess.Popen[str]) -> None:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()

    def connect(self) -> int:
        """Open the next connection: sent its first bytes, accepted; returns the client port."""
        port = int(self._line(self.client))
        self.client_ports.append(port)
        self.peer_ports_seen_by_server.append(int(self._line(self.server)))
        return port

    def finish(self) -> None:
        """Let the open connection complete."""
        self._go(self.server)
        self._go(self.client)

    def run(self) -> None:
        for _ in range(self.count):
            self.connect()
            self.finish()
        assert self.client.wait(timeout=60) == 0
        assert self.server.wait(timeout=60) == 0
        assert sorted(self.client_ports) == sorted(self.peer_ports_seen_by_server)

    def kill(self) -> None:
        for process in (self.client, self.server):
            if process.poll() is None:
                process.kill()
                process.wait()


@contextlib.contextmanager
def exchange(*args: Path, **kwargs: object) -> Iterator[Exchange]:
    peers = Exchange(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield peers
    finally:
        peers.kill()


@pytest.mark.parametrize(
    ("server_family", "listen_host", "client_family", "connect_host", "network_type", "address"),
    [
        ("AF_INET", "127.0.0.1", "AF_INET", "127.0.0.1", "ipv4", "127.0.0.1"),
        ("AF_INET6", "::1", "AF_INET6", "::1", "ipv6", "::1"),
        # A dual-stack listener: the accepted socket is IPv6 holding IPv4-mapped
        # addresses (::ffff:127.0.0.1); on the wire it is IPv4, and so it is reported.
        ("AF_INET6", "::", "AF_INET", "127.0.0.1", "ipv4", "127.0.0.1"),
    ],
    ids=["ipv4", "ipv6", "ipv4-mapped"],
)
@pytest.mark.kernel
def test_each_connection_closes_once_per_side_with_exact_identity_and_bytes(
    sink: CollectingSink,
    server_family: str,
    listen_host: str,
    client_family: str,
    connect_host: str,
    network_type: str,
    address: str,
) -> None:
    count, first, rest, reply = 3, 60_000, 40_001, 7_777
    with scratch_cgroup() as server_cgroup, scratch_cgroup() as client_cgroup:
        started = time.monotonic_ns()
        with exchange(
            server_cgroup,
            client_cgroup,
            count=count,
            first=first,
            rest=rest,
            reply=reply,
            server_family=server_family,
            listen_host=listen_host,
            client_family=client_family,
            connect_host=connect_host,
        ) as peers:
            names = comm(peers.server.pid), comm(peers.client.pid)
            peers.run()
        elapsed = time.monotonic_ns() - started
        server_events = exactly(sink, closes_of(peers.server.pid), count)
        client_events = exactly(sink, closes_of(peers.client.pid), count)

        for event in server_events:
            attrs = event.attributes
            assert attrs["vigil.tcp.direction"] == "server"
            assert attrs["vigil.cgroup.id"] == server_cgroup.stat().st_ino
            assert attrs["process.executable.name"] == names[0]
            assert attrs["network.local.port"] == peers.port
            assert attrs["vigil.tcp.bytes_received"] == first + rest
            assert attrs["vigil.tcp.bytes_sent"] == reply
        for event in client_events:
            attrs = event.attributes
            assert attrs["vigil.tcp.direction"] == "client"
            assert attrs["vigil.cgroup.id"] == client_cgroup.stat().st_ino
            assert attrs["process.executable.name"] == names[1]
            assert attrs["network.peer.port"] == peers.port
            assert attrs["vigil.tcp.bytes_sent"] == first + rest
            assert attrs["vigil.tcp.bytes_received"] == reply
        for event in server_events + client_events:
            attrs = event.attributes
            assert attrs["network.transport"] == "tcp"
            assert attrs["network.type"] == network_type
            assert attrs["network.local.address"] == address
            assert attrs["network.peer.address"] == address
            assert attrs["vigil.tcp.retransmits"] == 0
            duration = attrs["vigil.tcp.duration_ns"]
            assert isinstance(duration, int)
            assert 0 < duration < elapsed
            for flag in ("vigil.tcp.failed", "vigil.tcp.untracked", "vigil.tcp.owner_unknown"):
                assert flag not in attrs
            assert "error.type" not in attrs
    assert sorted(e.attributes["network.local.port"] for e in client_events) == sorted(
        peers.client_ports
    )
    assert sorted(e.attributes["network.peer.port"] for e in server_events) == sorted(
        peers.client_ports
    )


def test_owner_of_a_connection_taken_with_accept_rather_than_accept4(
    sink: CollectingSink,
) -> None:
    with scratch_cgroup() as server_cgroup, scratch_cgroup() as client_cgroup:
        with exchange(
            server_cgroup, client_cgroup, count=2, first=10, rest=0, reply=20, accept_call="accept"
        ) as peers:
            peers.run()
        events = exactly(sink, closes_of(peers.server.pid), 2)
        server_id = server_cgroup.stat().st_ino
    assert {e.attributes["vigil.cgroup.id"] for e in events} == {server_id}
    assert sorted(e.attributes["network.peer.port"] for e in events) == sorted(peers.client_ports)
    assert [e.attributes["vigil.tcp.bytes_received"] for e in events] == [10, 10]


@pytest.mark.kernel
def test_refused_connect_is_reported_as_a_failed_client_connection(sink: CollectingSink) -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))  # bound, not listening: connects are refused
        port = bound.getsockname()[1]
        with socket.socket() as client, pytest.raises(ConnectionRefusedError):
            client.connect(("127.0.0.1", port))

    def refused(event: Event) -> bool:
        return closes_of(os.getpid())(event) and event.attributes["network.peer.port"] == port

    [event] = exactly(sink, refused, 1)
    attrs = event.attributes
    assert attrs["vigil.tcp.failed"] is True
    assert attrs["error.type"] == "ECONNREFUSED"
    assert attrs["vigil.tcp.direction"] == "client"
    assert attrs["vigil.cgroup.id"] == own_cgroup_id()
    assert attrs["process.executable.name"] == comm(os.getpid())
    assert (attrs["vigil.tcp.bytes_sent"], attrs["vigil.tcp.bytes_received"]) == (0, 0)


@pytest.mark.kernel
def test_unselected_cgroups_are_filtered_in_the_kernel(agent: Agent, sink: CollectingSink) -> None:
    with (
        scratch_cgroup() as server_cgroup,
        scratch_cgroup() as client_cgroup,
        kernel_selection(
            agent.probes["tcp"].bpf,
            selected=[client_cgroup.stat().st_ino],
            unselected=[server_cgroup.stat().st_ino],
        ),
    ):
        with exchange(server_cgroup, client_cgroup, count=2, first=5, rest=5, reply=3) as peers:
            peers.run()
        exactly(sink, closes_of(peers.client.pid), 2)
    servers_port = peers.port
    assert not sink.matching(closes_of(peers.server.pid))
    assert not sink.matching(
        lambda e: e.kind == KIND and e.attributes.get("network.local.port") == servers_port
    ), "the server side belongs to an unselected cgroup"


def test_connection_opened_before_the_agent_started_is_reported_at_close() -> None:
    """Bytes count from the connection's start; the owner is unknown, the socket's cgroup is not."""
    require_bpf()
    first, rest, reply = 12_345, 678, 910
    with scratch_cgroup() as server_cgroup, scratch_cgroup() as client_cgroup:
        with exchange(
            server_cgroup, client_cgroup, count=1, first=first, rest=rest, reply=reply
        ) as peers:
            client_port = peers.connect()  # connected and accepted before the agent runs
            sink = CollectingSink()
            agent = Agent(parse_config(TCP_ON), sinks=[sink], probes=["tcp"])
            agent.start()
            try:
                peers.finish()
                assert peers.client.wait(timeout=30) == 0
                assert peers.server.wait(timeout=30) == 0
                [client] = exactly(sink, closes_at(client_port, peers.port), 1)
                [server] = exactly(sink, closes_at(peers.port, client_port), 1)
            finally:
                agent.stop()
        assert client.attributes["vigil.cgroup.id"] == client_cgroup.stat().st_ino
        assert server.attributes["vigil.cgroup.id"] == server_cgroup.stat().st_ino
    assert (
        client.attributes["vigil.tcp.bytes_sent"],
        client.attributes["vigil.tcp.bytes_received"],
    ) == (first + rest, reply)
    assert (
        server.attributes["vigil.tcp.bytes_received"],
        server.attributes["vigil.tcp.bytes_sent"],
    ) == (first + rest, reply)
    for event in (client, server):
        attrs = event.attributes
        assert attrs["vigil.tcp.untracked"] is True
        assert attrs["vigil.tcp.owner_unknown"] is True
        assert attrs["vigil.tcp.direction"] == "unknown"
        assert "process.pid" not in attrs
        assert "vigil.tcp.duration_ns" not in attrs


def test_without_accept_tracking_server_connections_carry_the_listeners_cgroup() -> None:
    config = parse_config({"probes": {"tcp": {"enabled": True, "acceptOwner": False}}})
    with running(config, ["tcp"]) as (agent, sink):
        attached = {hook.tracepoint for hook, _link in agent.probes["tcp"]._attached}
        assert attached == {"sock:inet_sock_set_state", "tcp:tcp_retransmit_skb"}
        with scratch_cgroup() as server_cgroup, scratch_cgroup() as client_cgroup:
            with exchange(server_cgroup, client_cgroup, count=1, first=3, rest=4, reply=5) as peers:
                peers.run()
            [server] = exactly(sink, closes_at(peers.port, peers.client_ports[0]), 1)
            assert server.attributes["vigil.cgroup.id"] == server_cgroup.stat().st_ino
    attrs = server.attributes
    assert attrs["vigil.tcp.direction"] == "server"
    assert attrs["vigil.tcp.owner_unknown"] is True
    assert "process.pid" not in attrs
    assert "vigil.tcp.untracked" not in attrs
    assert isinstance(attrs["vigil.tcp.duration_ns"], int)
    assert (attrs["vigil.tcp.bytes_received"], attrs["vigil.tcp.bytes_sent"]) == (7, 5)


def test_live_settings_change_through_the_config_map(agent: Agent) -> None:
    probe = agent.probes["tcp"]
    assert isinstance(probe, TcpProbe)
    original = probe.config
    table = probe.bpf[b"tcp_config"]
    try:
        quiet = original.model_copy(update={"retransmits": False})
        assert probe.update_config(quiet) is True
        assert table[ctypes.c_int(0)].retransmits == 0
        bigger = original.model_copy(update={"max_connections": original.max_connections * 2})
        assert probe.update_config(bigger) is False, "a map size needs a reload"
        assert probe.config == quiet, "a refused update changes nothing"
    finally:
        assert probe.update_config(original) is True
    assert table[ctypes.c_int(0)].retransmits == 1


def test_decoder_layout_matches_the_c_struct() -> None:
    """bcc derives a ctypes class from the C struct; the decoder must agree with it."""
    probe = TcpProbe(context=None, config=parse_config(TCP_ON).probes.tcp)  # type: ignore[arg-type]
    with compiled_alone(probe) as bpf:
        layout = ring_buffer_layout(bpf, b"tcp_events")
    assert layout.offsets == RECORD.offsets()
    assert layout.size == RECORD.size


# -- retransmissions over a lossy link ------------------------------------------


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def _retrans_segs(netns: str) -> int:
    """The namespace's own TcpRetransSegs counter (/proc/net/snmp)."""
    snmp = subprocess.run(
        ["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    header, values = (line.split() for line in snmp.splitlines() if line.startswith("Tcp:"))
    return int(values[header.index("RetransSegs")])


@contextlib.contextmanager
def _in_netns(name: str) -> Iterator[None]:
    """Run this thread in network namespace `name` (the agent's threads stay where they are)."""
    clone_newnet = 0x40000000
    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        if libc.setns(target.fileno(), clone_newnet) != 0:
            raise OSError(ctypes.get_errno(), f"setns({name})")
        try:
            yield
        finally:
            if libc.setns(home.fileno(), clone_newnet) != 0:
                raise OSError(ctypes.get_errno(), "setns(back)")


@contextlib.contextmanager
def lossy_link(loss_percent: int) -> Iterator[tuple[str, str, str]]:
    """Client netns <-veth-> server netns, dropping loss_percent of TCP packets to the server.

    Yields (client netns, server netns, server address). Each side has its
    own namespace, so the client namespace's TcpRetransSegs counts exactly
    the client's retransmissions.
    """
    suffix = uuid.uuid4().hex[:6]
    client_ns, server_ns = f"vigil-tcp-{suffix}-c", f"vigil-tcp-{suffix}-s"
    client_dev, server_dev = f"vc{suffix}", f"vs{suffix}"
    module = None
    try:
        _ip("netns", "add", client_ns)
        _ip("netns", "add", server_ns)
        _ip(
            "-n", client_ns, "link", "add", client_dev, "type", "veth",
            "peer", "name", server_dev, "netns", server_ns,
        )  # fmt: skip
        _ip("-n", client_ns, "addr", "add", "10.77.0.1/24", "dev", client_dev)
        _ip("-n", server_ns, "addr", "add", "10.77.0.2/24", "dev", server_dev)
        for netns, dev in ((client_ns, client_dev), (server_ns, server_dev)):
            _ip("-n", netns, "link", "set", dev, "up")
            _ip("-n", netns, "link", "set", "lo", "up")
        module = compiler.compile_sources(
            [Path(__file__).with_name("test_tcp_loss.bpf.c")],
            defines={"LOSS_PERCENT": loss_percent},
        )
        from bcc import BPF

        drop = module.bpf.load_func(b"test_tcp_loss", BPF.XDP)
        with _in_netns(server_ns):
            BPF.attach_xdp(server_dev.encode(), drop, BPF.XDP_FLAGS_SKB_MODE)
        yield client_ns, server_ns, "10.77.0.2"
    finally:
        for netns in (client_ns, server_ns):
            subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)
        if module is not None:
            module.close()


def test_retransmissions_are_counted_per_cgroup_and_bytes_stay_exact(
    agent: Agent, sink: CollectingSink
) -> None:
    probe = agent.probes["tcp"]
    assert isinstance(probe, TcpProbe)
    count, first, rest, reply = 2, 200_000, 100_000, 30_000
    with (
        lossy_link(30) as (client_ns, server_ns, server_address),
        scratch_cgroup() as server_cgroup,
        scratch_cgroup() as client_cgroup,
    ):
        with exchange(
            server_cgroup,
            client_cgroup,
            count=count,
            first=first,
            rest=rest,
            reply=reply,
            listen_host=server_address,
            connect_host=server_address,
            server_prefix=("ip", "netns", "exec", server_ns),
            client_prefix=("ip", "netns", "exec", client_ns),
        ) as peers:
            peers.run()
        client_events = exactly(sink, closes_of(peers.client.pid), count)
        server_events = exactly(sink, closes_of(peers.server.pid), count)
        client_segs = _retrans_segs(client_ns)
        counts = probe.retransmit_counts()
        points = {
            p.attributes["vigil.cgroup.id"]: p.value
            for p in probe.collect()
            if p.spec is RETRANSMITS
        }
        client_id, server_id = client_cgroup.stat().st_ino, server_cgroup.stat().st_ino

    client_retransmits = sum(int(e.attributes["vigil.tcp.retransmits"]) for e in client_events)
    server_retransmits = sum(int(e.attributes["vigil.tcp.retransmits"]) for e in server_events)
    assert client_retransmits > 0, "30 % loss and no retransmission?"
    # Three independent kernel counts of the same thing must agree exactly.
    assert client_retransmits == client_segs
    assert counts.get(client_id) == client_retransmits
    assert points.get(client_id) == client_retransmits
    assert counts.get(server_id, 0) == server_retransmits
    for event in client_events:
        assert event.attributes["vigil.tcp.bytes_sent"] == first + rest
        assert event.attributes["vigil.tcp.bytes_received"] == reply
        assert event.attributes["vigil.cgroup.id"] == client_id
    for event in server_events:
        assert event.attributes["vigil.tcp.bytes_received"] == first + rest
        assert event.attributes["vigil.tcp.bytes_sent"] == reply
        assert event.attributes["network.local.address"] == server_address
