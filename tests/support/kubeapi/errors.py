"""API errors carried as Kubernetes ``Status`` objects.

Every failure the fake reports, over HTTP or to test code, is an :class:`ApiError`, so
the HTTP layer can turn it into the ``Status`` body a real API server sends
(``kind: Status``, ``code``, ``reason``, ``message``, ``details``) and clients that
branch on ``reason``/``code`` (kopf, the ``kubernetes`` client) see what they expect.
"""

from __future__ import annotations

from typing import Any

JSON = dict[str, Any]


class ApiError(Exception):
    """A request the API server refuses; ``status()`` is the response body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSON | None = None,
    ) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> JSON:
        body: JSON = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _details(group: str, plural: str, name: str | None) -> JSON:
    details: JSON = {"group": group, "kind": plural}
    if name is not None:
        details["name"] = name
    return details


def not_found(group: str, plural: str, name: str) -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(
        404,
        "NotFound",
        f'{resource} "{name}" not found',
        details=_details(group, plural, name),
    )


def already_exists(group: str, plural: str, name: str) -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "AlreadyExists",
        f'{resource} "{name}" already exists',
        details=_details(group, plural, name),
    )


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    resource = f"{plural}.{group}" if group else plural
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource} "{name}": {why}',
        details=_details(group, plural, name),
    )


def stale_update(group: str, plural: str, name: str) -> ApiError:
    return conflict(
        group,
        plural,
        name,
        "the object has been modified; please apply your changes to the latest version "
        "and try again",
    )


def invalid(group: str, plural: str, kind: str, name: str | None, message: str) -> ApiError:
    shown = f'{kind} "{name}"' if name else kind
    return ApiError(
        422,
        "Invalid",
        f"{shown} is invalid: {message}",
        details=_details(group, plural, name) | {"kind": kind},
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def resource_not_found() -> ApiError:
    # What a real server answers for a path it has no route for.
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def method_not_allowed(method: str, what: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", f"{method} is not supported on {what}")


def service_unavailable() -> ApiError:
    return ApiError(
        503, "ServiceUnavailable", "the server is currently unable to handle the request"
    )
