"""The resource and the OTLP exporters, from the agent config and OTEL_* variables.

The file wins; what it leaves unset falls to the standard environment
variables (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _TIMEOUT, _COMPRESSION,
_CERTIFICATE, _INSECURE, _PROTOCOL and their per-signal forms), which the
SDK's exporters read themselves when given None. Only the protocol is ours to
resolve: the SDK has one exporter class per protocol.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Literal

from opentelemetry.sdk._logs.export import LogRecordExporter
from opentelemetry.sdk.metrics.export import MetricExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter

from vigil import __version__
from vigil.api.attributes import (
    HOST_NAME,
    K8S_CLUSTER_NAME,
    K8S_NODE_NAME,
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_VERSION,
)
from vigil.api.export import Otlp, check_endpoint

Signal = Literal["traces", "metrics", "logs"]
Protocol = Literal["grpc", "http/protobuf"]
PROTOCOLS: tuple[Protocol, ...] = ("grpc", "http/protobuf")
SERVICE = "vigil-agent"


class TelemetryError(ValueError):
    """Export settings that cannot work; the message names the field or variable."""


CLUSTER_NAME_VARIABLE = "K8S_CLUSTER_NAME"


def build_resource(
    *, node_name: str | None, cluster_name: str | None = None, version: str = __version__
) -> Resource:
    """service.name=vigil-agent, service.version, host.name, service.instance.id, and
    k8s.node.name and k8s.cluster.name when known.

    service.instance.id is the node's name (else the host's): stable across
    restarts, so Prometheus' `instance` and `target_info` continue the same
    series instead of starting new ones per run (one agent per node, so it is
    unique). k8s.cluster.name: `cluster_name`, else $K8S_CLUSTER_NAME.
    OTEL_RESOURCE_ATTRIBUTES adds to it (the SDK's detector); ours win on conflicts.
    """
    host = socket.gethostname()
    attributes: dict[str, str] = {
        SERVICE_NAME: SERVICE,
        SERVICE_VERSION: version,
        HOST_NAME: host,
        SERVICE_INSTANCE_ID: node_name or host,
    }
    if node_name:
        attributes[K8S_NODE_NAME] = node_name
    cluster = cluster_name or os.environ.get(CLUSTER_NAME_VARIABLE, "").strip()
    if cluster:
        attributes[K8S_CLUSTER_NAME] = cluster
    return Resource.create(attributes)


@dataclass(frozen=True, slots=True)
class OtlpSettings:
    """Resolved export settings: None means "the SDK reads the environment"."""

    protocol: Protocol
    endpoint: str | None
    headers: dict[str, str] | None
    insecure: bool | None
    certificate: str | None
    client_certificate: str | None
    client_key: str | None
    compression: Literal["none", "gzip"] | None
    timeout_s: float | None

    def signal_endpoint(self, signal: Signal) -> str | None:
        """The URL for one signal: gRPC takes the endpoint as is; HTTP appends /v1/<signal>."""
        if self.endpoint is None or self.protocol == "grpc":
            return self.endpoint
        base = self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}"
        return base.rstrip("/") + f"/v1/{signal}"


def _env_protocol(signal: Signal | None) -> Protocol | None:
    names = [f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL"] if signal else []
    names.append("OTEL_EXPORTER_OTLP_PROTOCOL")
    for name in names:
        value = os.environ.get(name, "").strip()
        if not value:
            continue
        for protocol in PROTOCOLS:
            if value == protocol:
                return protocol
        raise TelemetryError(f"{name}={value!r}: vigil supports {' or '.join(PROTOCOLS)}")
    return None


def resolve(
    otlp: Otlp, *, endpoint: str | None = None, signal: Signal | None = None
) -> OtlpSettings:
    """Merge the config (and a command-line endpoint, which beats it) with the environment."""
    if endpoint is not None:
        try:
            check_endpoint(endpoint)
        except ValueError as exc:
            raise TelemetryError(f"--otlp-endpoint: {exc}") from None
    timeout_s = None if otlp.timeout_ms is None else otlp.timeout_ms / 1000
    return OtlpSettings(
        protocol=otlp.protocol or _env_protocol(signal) or "grpc",
        endpoint=endpoint or otlp.endpoint,
        headers=dict(otlp.headers) or None,
        insecure=otlp.insecure,
        certificate=otlp.certificate,
        client_certificate=otlp.client_certificate,
        client_key=otlp.client_key,
        compression=otlp.compression,
        timeout_s=timeout_s,
    )


def _read(path: str | None, field: str) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TelemetryError(f"export.otlp.{field}: cannot read {path}: {exc.strerror}") from None


def _grpc_credentials(settings: OtlpSettings) -> Any:
    """Channel credentials from the configured files; None: the SDK's (env) choice."""
    if not (settings.certificate or settings.client_certificate or settings.client_key):
        return None
    import grpc  # type: ignore[import-untyped]

    return grpc.ssl_channel_credentials(
        root_certificates=_read(settings.certificate, "certificate"),
        private_key=_read(settings.client_key, "clientKey"),
        certificate_chain=_read(settings.client_certificate, "clientCertificate"),
    )


def _grpc_options(settings: OtlpSettings) -> dict[str, Any]:
    """Keyword arguments every OTLP/gRPC exporter takes, from the settings."""
    compression = None
    if settings.compression is not None:
        import grpc

        gzip = settings.compression == "gzip"
        compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    return {
        "endpoint": settings.endpoint,
        "insecure": settings.insecure,
        "credentials": _grpc_credentials(settings),
        "headers": settings.headers,
        "timeout": settings.timeout_s,
        "compression": compression,
    }


def _http_options(settings: OtlpSettings, signal: Signal) -> dict[str, Any]:
    """Keyword arguments every OTLP/HTTP exporter takes, for `signal` (traces, metrics, logs)."""
    from opentelemetry.exporter.otlp.proto.http import Compression

    for path, field in (
        (settings.certificate, "certificate"),
        (settings.client_certificate, "clientCertificate"),
        (settings.client_key, "clientKey"),
    ):
        _read(path, field)  # a clear error now rather than a failed export later
    compression = None
    if settings.compression is not None:
        gzip = settings.compression == "gzip"
        compression = Compression.Gzip if gzip else Compression.NoCompression
    return {
        "endpoint": settings.signal_endpoint(signal),
        "certificate_file": settings.certificate,
        "client_key_file": settings.client_key,
        "client_certificate_file": settings.client_certificate,
        "headers": settings.headers,
        "timeout": settings.timeout_s,
        "compression": compression,
    }


def span_exporter(settings: OtlpSettings) -> SpanExporter:
    if settings.protocol == "grpc":
        from vigil.agent.telemetry.wire import GrpcSpanExporter

        return GrpcSpanExporter(**_grpc_options(settings))
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(**_http_options(settings, "traces"))


def metric_exporter(settings: OtlpSettings) -> MetricExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**_grpc_options(settings))
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HttpMetricExporter,
    )

    return HttpMetricExporter(**_http_options(settings, "metrics"))


def log_exporter(settings: OtlpSettings) -> LogRecordExporter:
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**_grpc_options(settings))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    return HttpLogExporter(**_http_options(settings, "logs"))
