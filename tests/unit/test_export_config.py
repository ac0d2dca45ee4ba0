"""export.* settings: validation, the environment's part, and the exporters they build."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

from vigil.agent.telemetry import provider
from vigil.agent.telemetry.export import wanted
from vigil.agent.telemetry.wire import GrpcSpanExporter
from vigil.api.config import ConfigError, parse_config
from vigil.api.export import Export, Otlp, Prometheus

pytestmark = pytest.mark.telemetry

OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_EXPORTER_OTLP_INSECURE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("endpoint", "reason"),
    [
        ("ftp://collector:4317", "the scheme must be http or https"),
        ("http://:4317", "has no host"),
        ("http://collector:port", "has an invalid port"),
        ("collector", "is not host:port or an http(s):// URL"),
    ],
)
def test_bad_endpoints_name_the_field(endpoint: str, reason: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"export": {"otlp": {"endpoint": endpoint}}})
    assert "export.otlp.endpoint" in str(error.value)
    assert reason in str(error.value)


def test_the_file_uses_camel_case() -> None:
    config = parse_config(
        {
            "export": {
                "otlp": {"endpoint": "collector:4317", "timeoutMs": 2500, "compression": "gzip"},
                "metrics": {"intervalMs": 1000, "attributes": ["k8s.pod.name"]},
                "spans": {"samplingRatio": 0.25, "maxOpen": 1024, "batchDelayMs": 200},
                "prometheus": {"enabled": True, "port": 9999},
            }
        }
    )
    export = config.export
    assert export.otlp.timeout_ms == 2500
    assert export.metrics.attributes == ("k8s.pod.name",)
    assert export.spans.sampling_ratio == 0.25
    assert export.spans.max_open == 1024
    assert export.prometheus.port == 9999


def test_the_file_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    otlp = Otlp(endpoint="http://file:4317", protocol="grpc", headers={"a": "1"}, timeout_ms=1500)
    settings = provider.resolve(otlp)
    assert settings.protocol == "grpc"
    assert settings.endpoint == "http://file:4317"
    assert settings.headers == {"a": "1"}
    assert settings.timeout_s == 1.5


def test_the_environment_fills_what_the_file_leaves_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-token=secret")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "3")
    assert provider.resolve(Otlp(), signal="traces").protocol == "grpc"
    settings = provider.resolve(Otlp(), signal="metrics")
    assert settings.protocol == "http/protobuf"
    assert (settings.endpoint, settings.headers, settings.timeout_s) == (None, None, None)
    exporter = provider.metric_exporter(settings)  # the SDK reads the variables itself
    assert exporter._endpoint == "http://env:4318/v1/metrics"  # type: ignore[attr-defined]


def test_a_bad_protocol_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(provider.TelemetryError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json'"):
        provider.resolve(Otlp())


def test_the_command_line_endpoint_wins_and_is_checked() -> None:
    otlp = Otlp(endpoint="http://file:4317")
    assert provider.resolve(otlp, endpoint="http://cli:4317").endpoint == "http://cli:4317"
    with pytest.raises(provider.TelemetryError, match="--otlp-endpoint: 'nohost'"):
        provider.resolve(otlp, endpoint="nohost")


def test_exporters_per_protocol() -> None:
    grpc_settings = provider.resolve(
        Otlp(endpoint="http://127.0.0.1:4317", headers={"k": "v"}, timeout_ms=2000)
    )
    spans = provider.span_exporter(grpc_settings)
    assert isinstance(spans, GrpcSpanExporter)
    assert spans._endpoint == "127.0.0.1:4317"
    assert spans._headers == (("k", "v"),)
    assert spans._timeout == 2.0
    assert spans._insecure is True  # http:// means plaintext
    metrics = provider.metric_exporter(grpc_settings)
    assert isinstance(metrics, OTLPMetricExporter)
    for exporter in (spans, metrics):
        exporter.shutdown()

    http_settings = provider.resolve(
        Otlp(endpoint="http://127.0.0.1:4318/base/", protocol="http/protobuf")
    )
    http_spans = provider.span_exporter(http_settings)
    assert isinstance(http_spans, OTLPSpanExporter)
    assert http_spans._endpoint == "http://127.0.0.1:4318/base/v1/traces"
    http_spans.shutdown()


def test_unreadable_tls_files_name_the_field(tmp_path: Path) -> None:
    settings = provider.resolve(
        Otlp(endpoint="https://collector:4317", certificate=str(tmp_path / "missing.pem"))
    )
    with pytest.raises(provider.TelemetryError, match=r"export\.otlp\.certificate: cannot read"):
        provider.span_exporter(settings)


def test_which_outputs_turn_telemetry_on() -> None:
    assert wanted(Export(), ["console"]) == (False, False)
    assert wanted(Export(), ["json", "otlp"]) == (True, True)
    assert wanted(Export(otlp=Otlp(endpoint="http://c:4317")), ["json"]) == (True, True)
    assert wanted(Export(prometheus=Prometheus(enabled=True)), ["json"]) == (False, True)


def test_the_resource_names_the_agent_and_node() -> None:
    resource = provider.build_resource(node_name="node-7")
    assert resource.attributes["service.name"] == "vigil-agent"
    assert resource.attributes["k8s.node.name"] == "node-7"
    assert resource.attributes["service.version"]
    assert resource.attributes["host.name"]
    assert "k8s.node.name" not in provider.build_resource(node_name=None).attributes


def test_the_resource_identity_is_stable_and_names_the_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = provider.build_resource(node_name="node-7").attributes
    again = provider.build_resource(node_name="node-7").attributes
    assert first["service.instance.id"] == again["service.instance.id"] == "node-7"
    standalone = provider.build_resource(node_name=None).attributes
    assert standalone["service.instance.id"] == standalone["host.name"]
    assert "k8s.cluster.name" not in first
    monkeypatch.setenv("K8S_CLUSTER_NAME", "from-env")
    assert provider.build_resource(node_name=None).attributes["k8s.cluster.name"] == "from-env"
    named = provider.build_resource(node_name=None, cluster_name="prod")
    assert named.attributes["k8s.cluster.name"] == "prod"


@pytest.mark.parametrize(
    ("keys", "reason"),
    [
        (["process.pid"], "'process.pid' has unbounded values"),
        (
            ["k8s.pod.nmae"],
            "'k8s.pod.nmae' is not a registered attribute key (did you mean 'k8s.pod.name'?)",
        ),
        (["k8s.pod.uid"], "'k8s.pod.uid' has unbounded values"),
        (["network.peer.address"], "unbounded"),
        (["vigil.nothing"], "'vigil.nothing' is not a registered attribute key"),
        (["host.name"], "'host.name' is on resource only"),
        (["k8s.pod.name", "k8s.pod.name"], "a key is listed twice"),
    ],
)
def test_metric_attributes_are_registered_bounded_keys(keys: list[str], reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"export": {"metrics": {"attributes": keys}}})
    assert "export.metrics.attributes" in str(caught.value)
    assert reason in str(caught.value)


def test_pod_and_executable_names_are_opt_ins() -> None:
    config = parse_config(
        {"export": {"metrics": {"attributes": ["k8s.pod.name", "process.executable.name"]}}}
    )
    assert config.export.metrics.attributes == ("k8s.pod.name", "process.executable.name")
    assert "k8s.pod.name" not in Export().metrics.attributes
