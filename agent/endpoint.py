"""The agent's HTTP endpoint: /healthz, /readyz and /metrics on one port (`run --listen`).

What a kubelet and a Prometheus ask of a node agent, from the state the
agent already keeps:

- /healthz (liveness): 200 while the pipeline thread keeps turning (it turns
  at least every 0.1 s, for a batch or for its tick); 503 with the reason once
  it has not for `endpoint.stallSeconds` (a sink or stage stuck), or once the
  thread has ended. 200 while the probes are still being compiled: that is
  start-up, not a hang, and readiness covers it.
- /readyz (readiness): 200 once every requested probe is attached; 503 with
  what is missing (and why, when a probe failed) before, and after stop.
- /metrics: the Prometheus text of the telemetry's registry, the same one
  export.prometheus serves (one set of readers, not a second exporter).

The server is the standard library's threading HTTP server: three fixed
routes do not justify a web framework in the agent's image.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vigil.agent.runtime import Agent

log = logging.getLogger(__name__)

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class EndpointError(Exception):
    """The endpoint cannot listen where asked (the message names the address)."""


@dataclass(frozen=True, slots=True)
class Status:
    ok: bool
    reason: str


class AgentChecks:
    """Liveness and readiness of one Agent, computed at each request."""

    def __init__(
        self,
        agent: Agent,
        *,
        stall_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._agent = agent
        self._stall_seconds = stall_seconds
        self._clock = clock

    def health(self) -> Status:
        agent = self._agent
        dispatcher = agent.dispatcher
        if not agent.running:
            return Status(True, "starting" if not agent.report.attached else "stopping")
        if not dispatcher.running:
            return Status(False, "pipeline thread is not running")
        idle = self._clock() - dispatcher.last_progress
        if idle > self._stall_seconds:
            return Status(
                False,
                f"pipeline stuck: no progress for {idle:.1f}s "
                f"(limit {self._stall_seconds:g}s), {dispatcher.backlog()} batches waiting",
            )
        return Status(True, f"pipeline progressing ({dispatcher.events_out} events handled)")

    def ready(self) -> Status:
        agent = self._agent
        requested = agent.requested_probes()
        if not agent.running:
            stage = "probes not attached yet" if not agent.report.attached else "stopping"
            return Status(False, stage)
        attached = agent.probes
        missing = [name for name in requested if name not in attached]
        if missing:
            failed = agent.report.failed
            reasons = [f"{name}: {failed.get(name, 'not attached')}" for name in missing]
            return Status(False, "probes not attached: " + "; ".join(reasons))
        return Status(True, "probes attached: " + ", ".join(requested))


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 in brackets: `[::]:9465`) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise EndpointError(f"--listen: {value!r} is not HOST:PORT (e.g. 0.0.0.0:9465)")
    return host.strip("[]"), int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: Any, *, ipv6: bool) -> None:
        self.address_family = socket.AF_INET6 if ipv6 else socket.AF_INET
        super().__init__(address, handler)


class Endpoint:
    """Serves the three routes on a thread of its own until close()."""

    def __init__(
        self,
        listen: str,
        *,
        health: Callable[[], Status],
        ready: Callable[[], Status],
        metrics: Callable[[], bytes] | None,
    ) -> None:
        host, port = parse_listen(listen)
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/healthz": lambda: _status(health()),
            "/readyz": lambda: _status(ready()),
        }
        if metrics is not None:
            routes["/metrics"] = lambda: (200, PROMETHEUS_CONTENT_TYPE, metrics())

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    code, kind, body = 404, "text/plain", b"not found: /healthz /readyz /metrics\n"
                else:
                    try:
                        code, kind, body = route()
                    except Exception as exc:  # a broken check must answer, not hang
                        log.exception("endpoint %s failed", self.path)
                        code, kind, body = 500, "text/plain", f"{exc}\n".encode()
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("endpoint: " + format, *args)

        try:
            self._server = _Server((host, port), Handler, ipv6=":" in host)
        except OSError as exc:
            raise EndpointError(f"--listen: cannot listen on {listen}: {exc.strerror}") from None
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="vigil-endpoint", daemon=True
        )
        self._thread.start()
        log.info("health and metrics at http://%s:%d/{healthz,readyz,metrics}", host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _status(status: Status) -> tuple[int, str, bytes]:
    return (200 if status.ok else 503), "text/plain", f"{status.reason}\n".encode()


def prometheus_text(registry: Any) -> Callable[[], bytes]:
    """The registry's exposition, rendered at each scrape."""
    from prometheus_client import generate_latest

    return lambda: bytes(generate_latest(registry))
