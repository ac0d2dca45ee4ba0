"""Tenants only add: a namespaced policy observes more of its own pods, and nothing else changes.

Real BPF, real cgroups (pods in the kubelet's layout below a scratch cgroup, their
objects in the stateful fake API server), and the config the operator would publish:
`reconcile.render` of real ProbePolicy objects over the node's base config. The
base observes `process` for everyone with small argv limits; tenant `a` asks for
`tcp`, a rule, more argv and a redaction for its pods; tenant `b` and the host ask
for nothing and must see exactly what the base gives them.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CollectingSink, of_pid, scratch_cgroup, spawn
from tests.support.kubeapi import FakeKubeAPI
from tests.support.pods import containerd_pod
from vigil.agent.pipeline.events import Event
from vigil.agent.runtime import Agent
from vigil.agent.selection.kernel import PROBE_BITS
from vigil.api.config import AgentConfig, parse_config
from vigil.api.policy import API_VERSION, parse_policy
from vigil.operator.reconcile import render

pytestmark = pytest.mark.bpf

NODE = "node-tenants"
BASE_MAX_ARGS = 4
BASE_MAX_BYTES = 64


@dataclass
class Node:
    api: FakeKubeAPI
    agent: Agent
    sink: CollectingSink
    scratch: Path
    base: AgentConfig

    def pod(self, namespace: str, labels: dict[str, str]) -> Path:
        """A running pod's container cgroup (a real directory; its inode is its id)."""
        leaf, cid = containerd_pod(
            self.api, self.scratch, namespace=namespace, node=NODE, labels=labels
        )
        pods = self.agent.pods
        assert pods is not None
        _eventually(lambda: pods.container(cid) is not None)
        return leaf

    def publish(self, *specs: tuple[str, dict[str, Any]]) -> AgentConfig:
        """(namespace, spec) ProbePolicies rendered as the operator does, applied live."""
        policies = [
            parse_policy(
                {
                    "apiVersion": API_VERSION,
                    "kind": "ProbePolicy",
                    "metadata": {"name": f"t{index}", "namespace": namespace},
                    "spec": spec,
                },
                base=self.base,
            )
            for index, (namespace, spec) in enumerate(specs)
        ]
        config = render(policies, self.base)
        self.agent.reload(config)
        return config

    def entry(self, cgroup: Path) -> tuple[int, int] | None:
        return self.agent.kernel_selection.entries().get(cgroup.stat().st_ino)

    def run_in(self, cgroup: Path | None, *args: str) -> int:
        child = spawn(list(args), cgroup=cgroup)
        assert child.wait() == 0
        return child.pid


def _eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    api = FakeKubeAPI(bookmark_interval=0.5)
    api.start()
    for name in ("a", "b"):
        api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    base = parse_config(
        {
            "probes": {
                "process": {"args": {"maxArgs": BASE_MAX_ARGS, "maxBytes": BASE_MAX_BYTES}},
                "tcp": {"enabled": False},
            },
            "enrichment": {
                "kubernetes": {
                    "mode": "on",
                    "nodeName": NODE,
                    "kubeconfig": str(api.kubeconfig(tmp_path_factory.mktemp("kube"))),
                    "holdMs": 300,
                }
            },
        }
    )
    sink = CollectingSink()
    agent = Agent(base, sinks=[sink])
    agent.start()
    try:
        with scratch_cgroup() as scratch:
            yield Node(api, agent, sink, scratch, base)
    finally:
        agent.stop()
        api.stop()


def _tap(agent: Agent, probe_name: str) -> list[int]:
    """The cgroup ids of every record `probe_name`'s ring buffer delivers from now on."""
    probe = agent.probes[probe_name]
    decode_batch = probe.decode_batch
    seen: list[int] = []
    lock = threading.Lock()

    def tap(batch: Any) -> list[Event]:
        events = decode_batch(batch)
        with lock:
            seen.extend(int(e.attributes["vigil.cgroup.id"]) for e in events)  # type: ignore[arg-type]
        return events

    probe.decode_batch = tap  # type: ignore[method-assign]
    return seen


def _connect_from(node: Node, cgroup: Path, port: int) -> int:
    """A python in `cgroup` opens a TCP connection to 127.0.0.1:port, sends 5 bytes, closes."""
    code = (
        "import socket, sys; s = socket.create_connection(('127.0.0.1', int(sys.argv[1]))); "
        "s.sendall(b'hello'); s.close()"
    )
    return node.run_in(cgroup, sys.executable, "-c", code, str(port))


def test_a_tenants_probe_and_rule_reach_its_pods_only(node: Node) -> None:
    in_a = node.pod("a", {"app": "web"})
    in_b = node.pod("b", {"app": "web"})
    host = node.scratch / f"host-{uuid.uuid4().hex[:6]}"
    host.mkdir()
    rule = {"name": "any-exec", "expression": 'kind == "process.exec"'}
    config = node.publish(
        (
            "a",
            {
                "podSelector": {"matchLabels": {"app": "web"}},
                "probes": {"tcp": {}},
                "rules": [rule],
            },
        )
    )
    # The node's settings are untouched: tcp stays off for everyone, process on.
    assert config.probes == node.base.probes
    assert config.export == node.base.export
    assert "tcp" in node.agent.probes
    tcp_records = _tap(node.agent, "tcp")
    tcp_bit = PROBE_BITS["tcp"]
    _eventually(lambda: (node.entry(in_a) or (0, 0))[0] & tcp_bit != 0)
    _eventually(lambda: node.entry(in_b) == (0, 0) and node.entry(host) == (0, 0))

    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def serve() -> None:
            for _ in range(2):
                conn, _ = server.accept()
                while conn.recv(64):
                    pass
                accepted.append(conn)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        pid_a = _connect_from(node, in_a, port)
        pid_b = _connect_from(node, in_b, port)
        thread.join(10)
        for conn in accepted:
            conn.close()

    [close] = node.sink.wait_for(of_pid(pid_a, "network.tcp.close"))
    assert close.attributes["k8s.namespace.name"] == "a"
    assert close.attributes["vigil.tcp.bytes_sent"] == 5
    assert close.attributes["vigil.policy.names"] == ["a/t0"]
    time.sleep(0.5)  # past the drain interval and the enrichment hold
    assert node.sink.matching(of_pid(pid_b, "network.tcp.close")) == []
    # The kernel emitted no record for b: the probe's ring buffer never carried one.
    assert in_b.stat().st_ino not in tcp_records
    assert in_a.stat().st_ino in tcp_records

    # Process events: a's are labelled and run through its rule; b's and the host's
    # arrive as with no policy at all.
    pid_a = node.run_in(in_a, "/bin/true", "a")
    pid_b = node.run_in(in_b, "/bin/true", "b")
    pid_host = node.run_in(host, "/bin/true", "host")
    [exec_a] = node.sink.wait_for(of_pid(pid_a, "process.exec"))
    assert exec_a.attributes["vigil.policy.names"] == ["a/t0"]
    for pid in (pid_b, pid_host):
        [event] = node.sink.wait_for(of_pid(pid, "process.exec"))
        assert "vigil.policy.names" not in event.attributes
        assert event.attributes["process.command_args"][0] == "/bin/true"
        node.sink.wait_for(of_pid(pid, "process.exit"))
    matches = node.sink.wait_for(lambda e: e.kind == "rule.match" and of_pid(pid_a)(e))
    assert [m.attributes["vigil.rule.policy"] for m in matches] == ["a/t0"]
    rule_cgroups = {
        m.attributes["vigil.cgroup.id"]
        for m in node.sink.matching(lambda e: e.kind == "rule.match")
    }
    assert in_b.stat().st_ino not in rule_cgroups
    assert host.stat().st_ino not in rule_cgroups
    host.rmdir()


def test_a_tenant_raises_capture_and_redacts_for_its_pods_only(node: Node) -> None:
    in_a = node.pod("a", {"app": "api"})
    in_b = node.pod("b", {"app": "api"})
    node.publish(
        (
            "a",
            {
                "podSelector": {"matchLabels": {"app": "api"}},
                "probes": {
                    "process": {"maxArgs": 16, "maxBytes": 1024, "redact": [r"pin=(?P<value>\d+)"]}
                },
            },
        )
    )
    _eventually(lambda: node.entry(in_a) == (PROBE_BITS["process"], 1024))
    _eventually(lambda: node.entry(in_b) == (0, 0))
    args = ["pin=1234", *(f"argument-{i:02d}" for i in range(10))]  # 121 bytes of argv
    pid_a = node.run_in(in_a, "/bin/echo", *args)
    pid_b = node.run_in(in_b, "/bin/echo", *args)
    [exec_a] = node.sink.wait_for(of_pid(pid_a, "process.exec"))
    [exec_b] = node.sink.wait_for(of_pid(pid_b, "process.exec"))
    # a: all 11 arguments (over the node's 4 and its 64 kernel bytes), its pin masked.
    assert exec_a.attributes["process.command_args"] == ["/bin/echo", "pin=REDACTED", *args[1:]]
    assert "vigil.process.args_truncated" not in exec_a.attributes
    # b: the node's limits and the node's redactions only.
    assert exec_b.attributes["process.command_args"] == ["/bin/echo", "pin=1234", *args[1:3]]
    assert exec_b.attributes["vigil.process.args_truncated"] is True
    assert "vigil.policy.names" not in exec_b.attributes
