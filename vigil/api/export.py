"""Where telemetry goes: OTLP (metrics, spans, logs) and an optional Prometheus endpoint.

The standard OTEL_EXPORTER_OTLP_* environment variables fill in what the
file leaves unset (the file wins), as in every OpenTelemetry SDK.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from vigil.api import attributes as registry
from vigil.api.attributes import (
    K8S_CONTAINER_NAME,
    K8S_NAMESPACE_NAME,
    VIGIL_K8S_WORKLOAD_KIND,
    VIGIL_K8S_WORKLOAD_NAME,
)
from vigil.api.base import ApiModel

# Workload-level: a Deployment's pods (and their restarts, rollouts) share their
# series, as users query them in Grafana. Pod and executable names are opt-in
# (pods churn; a node runs hundreds of binaries); node and cluster are on the
# resource. Never pids, arguments or addresses (unbounded: refused below).
DEFAULT_METRIC_ATTRIBUTES: tuple[str, ...] = (
    K8S_NAMESPACE_NAME,
    VIGIL_K8S_WORKLOAD_KIND,
    VIGIL_K8S_WORKLOAD_NAME,
    K8S_CONTAINER_NAME,
)


def check_metric_attribute(key: str) -> str:
    """A key export.metrics.attributes may name: registered, on events or metrics, bounded."""
    found = registry.find(key)
    if found is None:
        close = [a.name for a in registry.ATTRIBUTES if _near(a.name, key)]
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"{key!r} is not a registered attribute key{hint}")
    if found.unbounded:
        raise ValueError(
            f"{key!r} has unbounded values (a series per value): not a metric attribute"
        )
    if "event" not in found.on and "metric" not in found.on:
        raise ValueError(f"{key!r} is on {', '.join(found.on)} only, not on events or metrics")
    return key


def _near(known: str, typed: str) -> bool:
    """One edit or one swap of neighbours apart (typos like k8s.pod.nmae)."""
    if abs(len(known) - len(typed)) > 1 or known == typed:
        return False
    if len(known) == len(typed):
        diff = [i for i, (a, b) in enumerate(zip(known, typed, strict=True)) if a != b]
        if len(diff) == 1:
            return True
        i = diff[0] if len(diff) == 2 else -1
        return len(diff) == 2 and diff[1] == i + 1 and known[i] == typed[i + 1]
    short, long_ = sorted((known, typed), key=len)
    return any(long_[:i] + long_[i + 1 :] == short for i in range(len(long_)))


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
        description="event attributes kept as metric attributes: registered keys with "
        "bounded values (k8s.pod.name and process.executable.name are allowed opt-ins)",
    )
    cardinality_limit: int = Field(
        2000,
        ge=10,
        le=1_000_000,
        description="live series per metric; beyond it one otel.metric.overflow=true "
        "series takes the rest (counted in vigil.agent.metrics.overflow, logged once)",
    )
    stale_intervals: int = Field(
        4,
        ge=1,
        le=10_000,
        description="a series not updated for this many export intervals is evicted "
        "(gone pods do not keep series forever nor fill the limit)",
    )

    @field_validator("attributes")
    @classmethod
    def _attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for key in value:
            check_metric_attribute(key)
        if len(set(value)) != len(value):
            raise ValueError("a key is listed twice")
        return value


class Spans(ApiModel):
    enabled: bool = True
    sampling_ratio: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="share of process trees traced (a whole tree is kept or dropped); "
        "0.1 keeps an idle node's span rate modest (see README)",
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

    cluster_name: str | None = Field(
        None,
        min_length=1,
        description="k8s.cluster.name on the resource; default $K8S_CLUSTER_NAME "
        "(the chart sets it from its clusterName value)",
    )
    otlp: Otlp = Otlp()
    metrics: Metrics = Metrics()
    spans: Spans = Spans()
    logs: Logs = Logs()
    prometheus: Prometheus = Prometheus()
