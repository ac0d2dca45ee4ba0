"""Where telemetry goes: OTLP (metrics, spans, logs) and an optional Prometheus endpoint.

The standard OTEL_EXPORTER_OTLP_* environment variables fill in what the
file leaves unset (the file wins), as in every OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vigil.api.base import ApiModel

# Pod-level attributes plus the executable: bounded by the pods and binaries of
# one node. Never pids, arguments or peer addresses (unbounded).
DEFAULT_METRIC_ATTRIBUTES: tuple[str, ...] = (
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "k8s.node.name",
    "process.executable.name",
)


class Otlp(ApiModel):
    endpoint: str | None = Field(
        None,
        description="collector URL, e.g. http://127.0.0.1:4317 (gRPC) or "
        "http://127.0.0.1:4318 (HTTP); default from OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None, description="default from OTEL_EXPORTER_OTLP_PROTOCOL, else grpc"
    )
    headers: dict[str, str] = Field(
        default_factory=dict, description="sent with every export (e.g. authentication)"
    )
    insecure: bool | None = Field(
        None, description="plaintext gRPC; default: true for http:// endpoints"
    )
    certificate: str | None = Field(None, description="CA bundle (PEM) to verify the collector")
    client_certificate: str | None = Field(None, description="client certificate (mTLS)")
    client_key: str | None = Field(None, description="client key (mTLS)")
    compression: Literal["none", "gzip"] | None = Field(None, description="default: none")
    timeout_ms: int = Field(10_000, ge=100, le=300_000, description="per export request")


class Metrics(ApiModel):
    enabled: bool = True
    interval_ms: int = Field(
        15_000, ge=100, description="how often metrics (and kernel map snapshots) are exported"
    )
    attributes: tuple[str, ...] = Field(
        DEFAULT_METRIC_ATTRIBUTES,
        description="event attributes kept as metric attributes (cardinality: keep bounded)",
    )


class Spans(ApiModel):
    enabled: bool = True
    sampling_ratio: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="share of process trees traced (a whole tree is kept or dropped)",
    )
    max_queue: int = Field(
        8192, ge=1, description="finished spans waiting for export; beyond it spans are dropped"
    )


class Prometheus(ApiModel):
    enabled: bool = False
    host: str = Field("127.0.0.1", description="address the /metrics endpoint binds to")
    port: int = Field(9464, ge=1, le=65535)


class Export(ApiModel):
    """OTLP export is active when `--output otlp` is given or an endpoint is configured."""

    otlp: Otlp = Otlp()
    metrics: Metrics = Metrics()
    spans: Spans = Spans()
    prometheus: Prometheus = Prometheus()
