"""In-process OTLP receivers for tests: what a collector would receive, decoded.

OtlpReceiver implements the collector's TraceService, MetricsService and
LogsService over gRPC (opentelemetry-proto + grpcio) on 127.0.0.1;
HttpOtlpReceiver takes OTLP/HTTP protobuf posts (aiohttp) on /v1/traces,
/v1/metrics and /v1/logs. Both keep every request and let a test wait for
what it caused.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric
from opentelemetry.proto.trace.v1.trace_pb2 import Span

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    if kind == "kvlist_value":
        return attributes(any_value.kvlist_value.values)
    return getattr(any_value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: value(kv.value) for kv in key_values}


@dataclass
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]
    scope: str

    @property
    def name(self) -> str:
        return str(self.span.name)

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def trace_id(self) -> bytes:
        return bytes(self.span.trace_id)

    @property
    def span_id(self) -> bytes:
        return bytes(self.span.span_id)

    @property
    def parent_span_id(self) -> bytes:
        return bytes(self.span.parent_span_id)


@dataclass
class ReceivedPoint:
    metric: Metric
    point: Any  # NumberDataPoint or HistogramDataPoint
    resource: dict[str, Any]

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.point.attributes)

    @property
    def value(self) -> float:
        kind = self.point.WhichOneof("value")
        return float(getattr(self.point, kind))


class _Store:
    def __init__(self, *, keep: bool = True) -> None:
        self.traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.changed = threading.Condition()
        self.keep = keep  # False (benchmarks): count spans, keep nothing
        self.span_count = 0

    def add(self, target: list[Any], request: Any) -> None:
        with self.changed:
            if target is self.traces:
                self.span_count += sum(
                    len(scope.spans)
                    for resource in request.resource_spans
                    for scope in resource.scope_spans
                )
            if self.keep:
                target.append(request)
            self.changed.notify_all()

    # -- views -------------------------------------------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self.changed:
            requests = list(self.traces)
        found = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append(ReceivedSpan(span, resource, scope_spans.scope.name))
        return found

    def points(self, name: str) -> list[ReceivedPoint]:
        """Every data point of metric `name`, in arrival order."""
        with self.changed:
            requests = list(self.metrics)
        found = []
        for request in requests:
            for resource_metrics in request.resource_metrics:
                resource = attributes(resource_metrics.resource.attributes)
                for scope_metrics in resource_metrics.scope_metrics:
                    for metric in scope_metrics.metrics:
                        if metric.name != name:
                            continue
                        data = getattr(metric, metric.WhichOneof("data"))
                        for point in data.data_points:
                            found.append(ReceivedPoint(metric, point, resource))
        return found

    def last(self, name: str, **match: Any) -> ReceivedPoint | None:
        """The latest point of `name` whose attributes include `match` (dots as __)."""
        wanted = {key.replace("__", "."): v for key, v in match.items()}
        for point in reversed(self.points(name)):
            attrs = point.attributes
            if all(attrs.get(k) == v for k, v in wanted.items()):
                return point
        return None

    def log_records(self) -> list[tuple[LogRecord, dict[str, Any]]]:
        with self.changed:
            requests = list(self.logs)
        return [
            (record, attributes(resource_logs.resource.attributes))
            for request in requests
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    def wait_for(self, probe: Callable[[], T], *, timeout: float = 15.0) -> T:
        """Poll `probe` (a view of what arrived) until it is truthy; return its last value."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                result = probe()
                remaining = deadline - time.monotonic()
                if result or remaining <= 0:
                    return result
                self.changed.wait(min(remaining, 0.1))


class OtlpReceiver(_Store):
    """OTLP/gRPC on 127.0.0.1:`port` (0: a free one)."""

    def __init__(self, port: int = 0, *, keep: bool = True) -> None:
        super().__init__(keep=keep)
        self.port = port
        self._server: Any = None
        store = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                store.add(store.traces, request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                store.add(store.metrics, request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:
                store.add(store.logs, request)
                return logs_service_pb2.ExportLogsServiceResponse()

        self._servicers = (Traces(), Metrics(), Logs())

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        traces, metrics, logs = self._servicers
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(traces, server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(metrics, server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(logs, server)
        self.port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


class HttpOtlpReceiver(_Store):
    """OTLP/HTTP (protobuf) on 127.0.0.1, served by aiohttp on its own thread."""

    def __init__(self) -> None:
        super().__init__()
        self.port = 0
        self.content_types: list[str] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            body = await request.read()
            self.content_types.append(request.content_type)
            kind = request.match_info["signal"]
            if kind == "traces":
                self.add(self.traces, trace_service_pb2.ExportTraceServiceRequest.FromString(body))
                reply = trace_service_pb2.ExportTraceServiceResponse()
            elif kind == "metrics":
                parsed = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                self.add(self.metrics, parsed)
                reply = metrics_service_pb2.ExportMetricsServiceResponse()
            else:
                self.add(self.logs, logs_service_pb2.ExportLogsServiceRequest.FromString(body))
                reply = logs_service_pb2.ExportLogsServiceResponse()
            return web.Response(
                body=reply.SerializeToString(), content_type="application/x-protobuf"
            )

        app = web.Application()
        app.router.add_post("/v1/{signal:traces|metrics|logs}", handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    def start(self) -> HttpOtlpReceiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> HttpOtlpReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def by_name(spans: list[ReceivedSpan], name: str) -> Iterator[ReceivedSpan]:
    return (span for span in spans if span.name == name)
