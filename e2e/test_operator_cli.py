"""`vigil-operator render` and `crds` as users run them: the command in a subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from vigil.api.config import parse_config

OPERATOR = [sys.executable, "-m", "vigil.operator.cli"]
ROOT = Path(__file__).resolve().parents[1]

WEB = """\
apiVersion: vigil.dev/v1alpha1
kind: ProbePolicy
metadata: {name: web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  probes:
    process: {captureArgs: true, maxArgs: 64, redact: ['pin=(?P<value>\\d+)']}
    tcp: {}
  rules:
    - {name: tmp-exec, expression: 'attributes["process.executable.path"].startsWith("/tmp/")'}
"""
NODE = """\
apiVersion: vigil.dev/v1alpha1
kind: ClusterProbePolicy
metadata: {name: node}
spec:
  probes: {runqlat: {}}
  export: {sampling: 0.5}
"""
BROKEN = """\
apiVersion: vigil.dev/v1alpha1
kind: ProbePolicy
metadata: {name: broken, namespace: shop}
spec:
  probes: {process: {}}
  rules:
    - {name: r, expression: 'kind == "process.exec" &&'}
"""


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OPERATOR, *args], capture_output=True, text=True, check=False)


def test_render_prints_the_agent_config(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    (tmp_path / "node.yaml").write_text(NODE)
    base = tmp_path / "base.yaml"
    base.write_text("pipeline: {drainIntervalMs: 20}\n")
    result = run(
        "render", str(tmp_path / "web.yaml"), str(tmp_path / "node.yaml"), "--base", str(base)
    )
    assert result.returncode == 0, result.stderr
    config = parse_config(yaml.safe_load(result.stdout))
    assert config.pipeline.drain_interval_ms == 20
    # The cluster policy turns runqlat on node-wide; the tenant's tcp and argv capture
    # stay its own (its AppliedPolicy), the node's limits untouched.
    assert config.probes.enabled() == ["process", "runqlat"]
    assert config.running_probes() == ["process", "tcp", "runqlat"]
    assert config.probes.process.args.max_args == 32
    assert [(p.namespace, p.name) for p in config.policies] == [(None, "node"), ("shop", "web")]
    capture = config.policies[1].capture
    assert capture is not None
    assert (capture.max_args, capture.redact) == (64, ("pin=(?P<value>\\d+)",))
    assert config.policies[1].rules[0].name == "tmp-exec"
    assert config.export.spans.sampling_ratio == 0.5

    # One multi-document file, in the other order: the same bytes.
    (tmp_path / "all.yaml").write_text(NODE + "---\n" + WEB)
    again = run("render", str(tmp_path / "all.yaml"), "--base", str(base))
    assert again.returncode == 0, again.stderr
    assert again.stdout == result.stdout


def test_render_of_a_namespaced_policy_alone_leaves_the_base_untouched(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    base = tmp_path / "base.yaml"
    base.write_text("probes: {process: {args: {maxArgs: 16}}}\nexport: {spans: {enabled: false}}\n")
    result = run("render", str(tmp_path / "web.yaml"), "--base", str(base))
    assert result.returncode == 0, result.stderr
    config = parse_config(yaml.safe_load(result.stdout))
    base_config = parse_config(yaml.safe_load(base.read_text()))
    assert config.probes == base_config.probes
    assert config.export == base_config.export
    assert config.pipeline == base_config.pipeline


def test_render_refuses_a_tenant_lowering_the_node(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB.replace("maxArgs: 64", "maxArgs: 8"))
    result = run("render", str(tmp_path / "web.yaml"))
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == (
        f"{tmp_path / 'web.yaml'}: ProbePolicy shop/web: spec.probes.process.maxArgs: 8 is "
        "below the node's 32; a ProbePolicy may only raise capture for its pods (unset: the "
        "node's)"
    )


def test_render_names_file_object_field_and_reason(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    (tmp_path / "more.yaml").write_text(NODE + "---\n" + BROKEN)
    result = run("render", str(tmp_path / "web.yaml"), str(tmp_path / "more.yaml"))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == (
        f"{tmp_path / 'more.yaml'} (document 2): ProbePolicy shop/broken: "
        "spec.rules[0].expression: not valid CEL: at 1:26: Syntax error: mismatched input "
        "'<EOF>' expecting {'[', '{', '(', '.', '-', '!', 'true', 'false', 'null', NUM_FLOAT, "
        "NUM_INT, NUM_UINT, STRING, BYTES, IDENTIFIER}"
    )
    assert lines[-1] == "vigil-operator: invalid policies, nothing rendered"


def test_render_refuses_unreadable_and_duplicate_input(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(WEB)
    (tmp_path / "bad.yaml").write_text("spec: [unclosed\n")
    result = run(
        "render",
        str(tmp_path / "web.yaml"),
        str(tmp_path / "web.yaml"),
        str(tmp_path / "bad.yaml"),
        str(tmp_path / "missing.yaml"),
    )
    assert result.returncode == 1
    assert f"{tmp_path / 'web.yaml'}: ProbePolicy shop/web: also defined in" in result.stderr
    assert f"{tmp_path / 'bad.yaml'}: not valid YAML" in result.stderr
    assert f"{tmp_path / 'missing.yaml'}: cannot read: No such file or directory" in result.stderr


def test_crds_check_passes_on_the_chart_and_fails_on_drift(tmp_path: Path) -> None:
    assert run("crds", "--check", str(ROOT / "charts" / "vigil" / "crds")).returncode == 0
    written = run("crds", "--write", str(tmp_path))
    assert written.returncode == 0
    (tmp_path / "probepolicies.vigil.dev.yaml").write_text("# edited by hand\n")
    drift = run("crds", "--check", str(tmp_path))
    assert drift.returncode == 1
    assert "probepolicies.vigil.dev.yaml: differs from the models" in drift.stdout
    printed = run("crds")
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(printed.stdout)]
    assert kinds == ["ProbePolicy", "ClusterProbePolicy", "ClusterKopfPeering"]


def test_run_reconciles_until_sigterm(tmp_path: Path) -> None:
    from tests.support.kubeapi import FakeKubeAPI, resource_from_crd
    from tests.support.otlp_receiver import free_port
    from vigil.api.crd import all_crds

    resources = [resource_from_crd(c) for c in all_crds().values()]
    (tmp_path / "base.yaml").write_text("pipeline: {drainIntervalMs: 20}\n")
    liveness = f"http://127.0.0.1:{free_port()}/healthz"  # the chart's probe, on loopback
    with FakeKubeAPI(resources, namespaces=("default", "vigil", "shop")) as api:
        api.create(yaml.safe_load(WEB))
        proc = subprocess.Popen(
            [
                *OPERATOR,
                "run",
                "--kubeconfig",
                str(api.kubeconfig(tmp_path)),
                "--namespace",
                "vigil",
                "--config-map",
                "agents",
                "--base",
                str(tmp_path / "base.yaml"),
                "--liveness",
                liveness,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while (cm := api.get("v1", "ConfigMap", "vigil", "agents")) is None:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "no ConfigMap written"
                time.sleep(0.1)
            config = parse_config(yaml.safe_load(cm["data"]["config.yaml"]))
            assert [p.name for p in config.policies] == ["web"]
            assert config.pipeline.drain_interval_ms == 20
            with urllib.request.urlopen(liveness, timeout=5) as response:
                assert response.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stderr
        assert "writing ConfigMap vigil/agents (key config.yaml); standalone" in stderr
