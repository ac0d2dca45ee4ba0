"""The agent in its image, with exactly the rendered chart's privileges, against real containers.

The image is built by scripts/build-image.sh (or reused from its cache). The
DaemonSet is rendered from charts/vigil with the Helm SDK and its pod spec is
translated one for one into `podman run` flags: capabilities, read-only root,
no privilege escalation, seccomp profile, hostPID, uid, host mounts, emptyDirs,
the ConfigMap, env, memory limit and args (with `$(POD_IP)` expanded as the
kubelet does). Two things differ from a cluster and neither is a privilege:
the network (the host's, so the test can reach the endpoint; the chart binds
to the pod IP, here 127.0.0.1) and the chart values the test sets (JSON
output to read events, the tcp probe, a free port).

Real containers run beside it: containerd + ctr in its default namespace and
in the kubelet cgroupfs layout (`/kubepods/<qos>/pod<uid>/<id>`), and podman
(`/libpod_parent/libpod-<id>`). Execs and TCP connections inside them must come
out of the agent with the runtime's own container id and the pod uid of the
path.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e import containers
from e2e.containers import CACHE, ROOT, kubepods_path, new_id, podman
from tests.support.bpf import require_bpf

helm = pytest.importorskip("helm_python.chart", reason="helm-python-sdk (dev extra) not installed")

pytestmark = pytest.mark.bpf

CHART = ROOT / "charts" / "vigil"
NODE_NAME = "e2e-node"
POD_IP = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    with helm.Chart.load(str(CHART)) as chart:
        rendered = chart.render(values=values, name="e2e", namespace="vigil")
    return [d for text in rendered.values() for d in yaml.safe_load_all(text) if d]


def chart_values(port: int, **agent: Any) -> dict[str, Any]:
    """What the test sets: the operator off (the chart writes the agents' ConfigMap),
    JSON events, the tcp probe, a free port. Privileges stay the chart's."""
    return {
        "operator": {"enabled": False},
        "agent": {
            "output": "json",
            "listen": {"port": port},
            "config": {"probes": {"tcp": {"enabled": True}}},
            **agent,
        },
    }


@dataclass
class AgentRun:
    """`podman run` flags for the rendered DaemonSet's agent container."""

    flags: list[str]
    args: list[str]
    capabilities: list[str]
    seccomp: dict[str, Any]
    memory_request: str
    port: int


def _memory_bytes(quantity: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def from_chart(docs: list[dict[str, Any]], scratch: Path, port: int) -> AgentRun:
    """Translate the DaemonSet's pod spec into podman flags; fail on anything unknown."""
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    security = container["securityContext"]
    flags = ["--network", "host"]
    assert pod["hostPID"] is True
    flags.append("--pid=host")
    assert "hostNetwork" not in pod
    assert "hostIPC" not in pod
    assert security["privileged"] is False
    flags += ["--user", str(security["runAsUser"])]
    if security["readOnlyRootFilesystem"]:
        flags.append("--read-only")
    if security["allowPrivilegeEscalation"] is False:
        flags += ["--security-opt", "no-new-privileges"]
    assert security["capabilities"]["drop"] == ["ALL"]
    flags.append("--cap-drop=all")
    capabilities = list(security["capabilities"]["add"])
    seccomp = pod["securityContext"]["seccompProfile"]
    flags += ["--security-opt", f"seccomp={seccomp_option(seccomp)}"]
    assert "appArmorProfile" not in pod["securityContext"]  # AppArmor is off on these hosts
    memory_limit = container["resources"]["limits"]["memory"]
    flags += ["--memory", str(_memory_bytes(memory_limit))]

    env = {"NODE_NAME": NODE_NAME, "POD_IP": POD_IP}
    for variable in container["env"]:
        if "value" in variable:
            env[variable["name"]] = variable["value"]
        else:
            field_path = variable["valueFrom"]["fieldRef"]["fieldPath"]
            assert field_path in ("spec.nodeName", "status.podIP"), variable
        flags += ["-e", f"{variable['name']}={env[variable['name']]}"]

    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    for mount in container["volumeMounts"]:
        volume = volumes[mount["name"]]
        target = mount["mountPath"]
        mode = "ro" if mount.get("readOnly") else "rw"
        if "hostPath" in volume:
            source = Path(volume["hostPath"]["path"])
            if volume["hostPath"].get("type") == "DirectoryOrCreate":
                source.mkdir(parents=True, exist_ok=True)
            flags += ["-v", f"{source}:{target}:{mode}"]
        elif "emptyDir" in volume:
            flags += ["--tmpfs", target]
        elif "configMap" in volume:
            assert volume["configMap"]["name"] == config_map["metadata"]["name"]
            directory = scratch / "config"
            directory.mkdir(exist_ok=True)
            for key, text in config_map["data"].items():
                (directory / key).write_text(text)
            flags += ["-v", f"{directory}:{target}:{mode}"]
        else:
            raise AssertionError(f"volume kind not translated: {volume}")
    args = [re.sub(r"\$\((\w+)\)", lambda m: env[m[1]], a) for a in container["args"]]
    return AgentRun(
        flags,
        args,
        capabilities,
        seccomp,
        container["resources"]["requests"]["memory"],
        port,
    )


def seccomp_option(profile: dict[str, Any]) -> str:
    if profile["type"] == "Unconfined":
        return "unconfined"
    if profile["type"] == "Localhost":
        # The chart's file, as the node would have it under /var/lib/kubelet/seccomp/.
        return str(CHART / "files" / profile["localhostProfile"])
    raise AssertionError(f"seccomp profile {profile} is not translated")


@dataclass
class RunningAgent:
    name: str
    port: int
    lines: list[str] = field(default_factory=list)

    def events(self) -> list[dict[str, Any]]:
        out = podman("logs", self.name, check=False)
        lines = out.split("\n")
        # The last line may be a partial write (stdout is block-buffered): whole lines only.
        return [json.loads(line) for line in lines[:-1] if line.startswith("{")]

    def stderr(self) -> str:
        result = subprocess.run(
            ["podman", "logs", self.name],
            env=containers.podman_env(),
            capture_output=True,
            text=True,
            check=False,
        )
        return result.stderr

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{POD_IP}:{self.port}{path}", timeout=3) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, _ = self.get("/readyz")
            if status == 200:
                return
            state = podman("inspect", "--format", "{{.State.Status}}", self.name, check=False)
            if state.strip() in ("exited", "stopped"):
                break
            time.sleep(0.2)
        pytest.fail(f"agent in the image never ready:\n{self.stderr()[-3000:]}")

    def wait_for(self, predicate: Any, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events() if predicate(e)]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.3)

    def rss_bytes(self) -> int:
        pid = podman("inspect", "--format", "{{.State.Pid}}", self.name).strip()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def agent_in_image(
    image: str, run: AgentRun, *, capabilities: list[str] | None = None
) -> Iterator[RunningAgent]:
    name = f"vigil-e2e-agent-{new_id()[:8]}"
    caps = run.capabilities if capabilities is None else capabilities
    cap_flags = [f"--cap-add={c}" for c in caps]
    podman("run", "-d", "--name", name, *run.flags, *cap_flags, image, *run.args)
    try:
        yield RunningAgent(name, run.port)
    finally:
        podman("stop", "--time", "10", name, check=False, timeout=60)
        podman("rm", "-f", name, check=False)


def run_to_completion(
    image: str, run: AgentRun, capabilities: list[str], seconds: float = 6
) -> tuple[int, str, list[dict[str, Any]]]:
    """The agent for `seconds` with these capabilities: (exit code, stderr, events)."""
    cap_flags = [f"--cap-add={c}" for c in capabilities]
    args = [*run.args, "--duration", str(seconds)]
    result = subprocess.run(
        ["podman", "run", "--rm", *run.flags, *cap_flags, image, *args],
        env=containers.podman_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    return result.returncode, result.stderr, events


class Listener:
    """A TCP server on the host's loopback that the containers connect to."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.socket.getsockname()[1])
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.recv(1024)

    def close(self) -> None:
        self.socket.close()


def tcp_client(port: int) -> list[str]:
    # bash's /dev/tcp: the minbase image has no curl or nc.
    return ["/bin/bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}; echo hi >&3; exec 3>&-"]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image; after the module, the cgroups podman's runs leave behind are removed."""
    require_bpf()
    reason = containers.have_tools()
    if reason is not None:
        pytest.fail(f"image e2e cannot run: {reason}")
    started = time.monotonic()
    reference = containers.build_image()
    print(f"\nimage {reference} ready in {time.monotonic() - started:.1f}s (cache {CACHE})")
    yield reference
    # conmon leaves its v1 cgroup a moment after `podman run --rm` returns.
    for _ in range(50):
        containers.remove_empty_cgroups("/libpod_parent/conmon")
        if not any(Path(h, "libpod_parent").exists() for h in containers.cgroup_hierarchies()):
            break
        time.sleep(0.1)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    return tmp_path


def test_agent_in_image_attributes_real_containers(image: str, scratch: Path) -> None:
    port = free_port()
    run = from_chart(render(chart_values(port)), scratch, port)
    assert run.seccomp == {"type": "Unconfined"}
    listener = Listener()
    cgroups: list[str] = []
    with containers.containerd(scratch) as ctrd:
        ctrd.ensure_base(scratch)
        plain = new_id()
        besteffort, pod_uid, pod_cid = kubepods_path("besteffort")
        cgroups += [f"/default/{plain}", besteffort]
        podman_name = f"vigil-e2e-sleeper-{new_id()[:8]}"
        try:
            # Containers older than the agent (found by its cgroup scan)...
            ctrd.run(plain, "sleep", "300")
            ctrd.run(pod_cid, "sleep", "300", cgroup=besteffort)
            podman(
                "run",
                "-d",
                "--network",
                "host",
                "--name",
                podman_name,
                containers.BASE,
                "sleep",
                "300",
            )
            podman_id = podman("inspect", "--format", "{{.Id}}", podman_name).strip()
            with agent_in_image(image, run) as agent:
                agent.wait_ready()
                status, body = agent.get("/healthz")
                assert status == 200, body
                # ...and one younger (the cgroup_mkdir tracepoint), short-lived.
                burstable, young_uid, young_cid = kubepods_path("burstable")
                cgroups.append(burstable)
                marker = f"vigil-image-{new_id()[:12]}"
                ctrd.ctr(
                    "run",
                    "--rm",
                    "--net-host",
                    "--cgroup",
                    burstable,
                    containers.BASE,
                    young_cid,
                    "/bin/echo",
                    f"{marker}-young",
                )
                ctrd.exec(plain, "/bin/echo", f"{marker}-plain")
                ctrd.exec(pod_cid, "/bin/echo", f"{marker}-pod")
                podman("exec", podman_name, "/bin/echo", f"{marker}-podman")
                ctrd.exec(pod_cid, *tcp_client(listener.port))
                podman("exec", podman_name, *tcp_client(listener.port))

                expected = {
                    f"{marker}-plain": {"container.id": plain, "container.runtime": "containerd"},
                    f"{marker}-pod": {
                        "container.id": pod_cid,
                        "k8s.pod.uid": pod_uid,
                        "vigil.k8s.pod.qos_class": "besteffort",
                    },
                    f"{marker}-young": {
                        "container.id": young_cid,
                        "k8s.pod.uid": young_uid,
                        "vigil.k8s.pod.qos_class": "burstable",
                    },
                    f"{marker}-podman": {"container.id": podman_id, "container.runtime": "podman"},
                }
                for argument, attributes in expected.items():
                    found = agent.wait_for(
                        lambda e, a=argument: (
                            e["kind"] == "process.exec"
                            and e["attributes"].get("process.command_args") == ["/bin/echo", a]
                        )
                    )
                    assert len(found) == 1, f"{argument}: {found}"
                    got = found[0]["attributes"]
                    assert {k: got.get(k) for k in attributes} == attributes, got
                    assert got["k8s.node.name"] == NODE_NAME

                for cid in (pod_cid, podman_id):
                    closes = agent.wait_for(
                        lambda e, c=cid: (
                            e["kind"] == "network.tcp.close"
                            and e["attributes"].get("network.peer.port") == listener.port
                            and e["attributes"].get("container.id") == c
                        )
                    )
                    assert len(closes) == 1, (cid, closes)
                    assert closes[0]["attributes"]["vigil.tcp.direction"] == "client"
                    assert closes[0]["attributes"]["vigil.tcp.bytes_sent"] == 3
                pod_close = agent.wait_for(
                    lambda e: (
                        e["kind"] == "network.tcp.close"
                        and e["attributes"].get("container.id") == pod_cid
                    )
                )[0]
                assert pod_close["attributes"]["k8s.pod.uid"] == pod_uid

                status, metrics = agent.get("/metrics")
                assert status == 200
                assert "vigil_agent_events" in metrics

                # Idle resident memory against the chart's request.
                time.sleep(3)
                rss = agent.rss_bytes()
                request = _memory_bytes(run.memory_request)
                print(
                    f"\nagent idle RSS in the image: {rss / 2**20:.0f} MiB "
                    f"(chart request {run.memory_request})"
                )
                assert rss < request, (rss, request)
        finally:
            listener.close()
            podman("rm", "-f", podman_name, check=False)
            for cid in (plain, pod_cid):
                ctrd.remove(cid)
            containers.remove_empty_cgroups(*cgroups)


def test_capabilities_are_minimal_and_each_one_is_needed(image: str, scratch: Path) -> None:
    """Drop each capability the chart lists in turn: every one has a visible use."""
    port = free_port()
    run = from_chart(render(chart_values(port)), scratch, port)
    granted = set(_bounding_set())
    results: dict[str, str] = {}

    def without(cap: str) -> list[str]:
        return [c for c in run.capabilities if c != cap]

    # CAP_BPF: bpf() map creation.
    code, stderr, _ = run_to_completion(image, run, without("BPF"))
    assert code == 1, stderr
    assert "Operation not permitted" in stderr
    assert "this process lacks CAP_BPF and CAP_PERFMON" in stderr
    results["BPF"] = "map creation: Operation not permitted"

    # CAP_PERFMON: attaching tracepoints (perf_event_open).
    code, stderr, _ = run_to_completion(image, run, without("PERFMON"))
    assert code == 1, stderr
    assert "cannot attach" in stderr or "Need super-user privileges" in stderr, stderr
    results["PERFMON"] = "cannot attach tracepoints"

    # CAP_SYS_PTRACE: /proc/<pid>/exe of processes older than the agent, so their
    # exit events carry the executable path.
    def older_process_exit(caps: list[str]) -> dict[str, Any]:
        sleeper = subprocess.Popen(["/bin/sleep", "300"])
        try:
            with agent_in_image(image, run, capabilities=caps) as agent:
                agent.wait_ready()
                sleeper.terminate()
                sleeper.wait()
                exits = agent.wait_for(
                    lambda e: (
                        e["kind"] == "process.exit"
                        and e["attributes"]["process.pid"] == sleeper.pid
                    )
                )
        finally:
            sleeper.kill()
            sleeper.wait()
        assert len(exits) == 1, exits
        attributes: dict[str, Any] = exits[0]["attributes"]
        return attributes

    with_ptrace = older_process_exit(run.capabilities)
    assert with_ptrace["process.executable.path"] == "/usr/bin/sleep"
    without_ptrace = older_process_exit(without("SYS_PTRACE"))
    assert "process.executable.path" not in without_ptrace, without_ptrace
    results["SYS_PTRACE"] = "exe of processes older than the agent"

    # CAP_SYS_RESOURCE: RLIMIT_MEMLOCK for BPF maps on kernels before 5.11. This
    # host's root does not have it at all (runc drops what the bounding set lacks).
    if "SYS_RESOURCE" in run.capabilities and "SYS_RESOURCE" not in granted:
        results["SYS_RESOURCE"] = "not grantable here (host bounding set); kernels < 5.11"

    assert set(results) == set(run.capabilities), (results, run.capabilities)
    print("\nminimal capabilities:", json.dumps(results, indent=1))


def _bounding_set() -> list[str]:
    names = {2: "DAC_READ_SEARCH", 19: "SYS_PTRACE", 24: "SYS_RESOURCE", 38: "PERFMON", 39: "BPF"}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
            return [name for bit, name in names.items() if mask & (1 << bit)]
    return []


def test_agent_runs_under_the_shipped_seccomp_profile(image: str, scratch: Path) -> None:
    """The Localhost profile works; a runtime default profile does not (the reason it ships)."""
    port = free_port()
    values = chart_values(
        port,
        seccompProfile={"type": "Localhost", "localhostProfile": "seccomp-vigil-agent.json"},
    )
    run = from_chart(render(values), scratch, port)
    assert run.seccomp["type"] == "Localhost"
    code, stderr, events = run_to_completion(image, run, run.capabilities)
    assert code == 0, stderr
    assert "ready: probes process, tcp" in stderr
    assert any(e["kind"] == "process.exec" for e in events)

    # podman's default profile: bpf() and perf_event_open() only with CAP_SYS_ADMIN.
    default: list[str] = []
    for flag in run.flags:
        if flag.startswith("seccomp="):
            default.pop()  # its "--security-opt"
        else:
            default.append(flag)
    default_run = AgentRun(default, run.args, run.capabilities, {}, run.memory_request, port)
    code, stderr, _ = run_to_completion(image, default_run, run.capabilities)
    assert code == 1, stderr
    assert "Operation not permitted" in stderr
    assert "seccomp profile refuses them" in stderr
    doctor = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            *default,
            *[f"--cap-add={c}" for c in run.capabilities],
            image,
            "doctor",
            "--json",
        ],
        env=containers.podman_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
    assert checks["seccomp"]["ok"] is False, checks["seccomp"]
    assert checks["bpf_privileges"]["ok"] is True


def test_operator_entrypoint_and_clear_error_without_mounts(image: str) -> None:
    """One image, two entrypoints; a missing tracefs mount says what to mount."""
    version = podman("run", "--rm", "--entrypoint", "vigil-operator", image, "--version")
    assert version.startswith("vigil-operator ")
    result = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--read-only",
            "--cap-drop=all",
            "--cap-add=BPF",
            "--cap-add=PERFMON",
            image,
            "run",
            "--output",
            "none",
            "--duration",
            "1",
        ],
        env=containers.podman_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "mount the host's /sys/kernel/tracing" in result.stderr
