"""Where telemetry goes: OTLP (metrics, spans, logs) and an optional Prometheus endpoint.

The standard OTEL_EXPORTER_OTLP_* environment variables fill in what the
file leaves unset (the file wins), as in every OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from vigil.api.attributes import (
    K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME,
    K8S_NODE_NAME,
    K8S_POD_NAME,
    PROCESS_EXECUTABLE_NAME,
)
from vigil.api.base import ApiModel

# Pod-level attributes plus the executable: bounded by the pods and binaries of
# one node. Never pids, arguments or peer addresses (unbounded).
DEFAULT_METRIC_ATTRIBUTES: tuple[str, ...] = (
    K8S_NAMESPACE_NAME,
    K8S_POD_NAME,
    K8S_CONTAINER_NAME,
    K8S_NODE_NAME,
    PROCESS_EXECUTABLE_NAME,
)


def check_endpoint(value: str) -> str:
    """An OTLP endpoint: http(s)://host:port[/path], or host:port (gRPC only)."""
    if "://" not in value:
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{value!r} is not host:port or an http(s):// URL")
        return value
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"{value!r}: the scheme must be http or https, not {parts.scheme!r}")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host")
    try:
        _ = parts.port  # raises on a port that is not a number
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    return value


class Otlp(ApiModel):
    endpoint: str | None = Field(
        None,
        description="collector URL, e.g. http://127.0.0.1:4317 (gRPC) or "
        "http://127.0.0.1:4318 (HTTP; /v1/<signal> is appended); "
        "default from OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    protocol: Literal["grpc", "http/protobuf"] | None = Field(
        None, description="default from OTEL_EXPORTER_OTLP_PROTOCOL, else grpc"
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="sent with every export (e.g. authentication); "
        "default from OTEL_EXPORTER_OTLP_HEADERS",
    )
    insecure: bool | None = Field(
        None, description="plaintext gRPC; default: true for http:// endpoints"
    )
    certificate: str | None = Field(None, description="CA bundle (PEM) to verify the collector")
    client_certificate: str | None = Field(None, description="client certificate (mTLS)")
    client_key: str | None = Field(None, description="client key (mTLS)")
    compression: Literal["none", "gzip"] | None = Field(
        None, description="default from OTEL_EXPORTER_OTLP_COMPRESSION, else none"
    )
    timeout_ms: int | None = Field(
        None,
        ge=100,
        le=300_000,
        description="per export request, retries included; "
        "default from OTEL_EXPORTER_OTLP_TIMEOUT, else 10 s",
    )
    shutdown_timeout_ms: int = Field(
        5000, ge=0, le=60_000, description="at shutdown: longest wait for the last exports"
    )

    @field_validator("endpoint")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        return None if value is None else check_endpoint(value)


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
    max_batch: int = Field(512, ge=1, description="spans per export request")
    batch_delay_ms: int = Field(
        1000, ge=10, le=60_000, description="longest a finished span waits before export"
    )
    max_open: int = Field(
        65536,
        ge=16,
        description="processes with an open span; beyond it the oldest span ends early "
        "(marked vigil.process.running=true) and is counted",
    )
    max_events: int = Field(
        64, ge=0, le=10_000, description="span events (slow syscalls, rule matches) per span"
    )


class Logs(ApiModel):
    """Rule matches as OTLP log records."""

    enabled: bool = True
    max_queue: int = Field(
        2048, ge=1, description="records waiting for export; beyond it records are dropped"
    )


class Prometheus(ApiModel):
    enabled: bool = False
    host: str = Field("127.0.0.1", description="address the /metrics endpoint binds to")
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")


class Export(ApiModel):
    """OTLP export is active when `--output otlp` is given or an endpoint is configured."""

    otlp: Otlp = Otlp()
    metrics: Metrics = Metrics()
    spans: Spans = Spans()
    logs: Logs = Logs()
    prometheus: Prometheus = Prometheus()
