"""kopf handlers: thin glue between policy objects and the publisher.

Every create/update/resume of a ProbePolicy or ClusterProbePolicy is validated with
the shared models (pydantic + CEL compile); the verdict goes to `status.conditions`
(Accepted True/False with reason and message), `status.observedGeneration` and a
Kubernetes Event, and a publish is requested. Deletions request a publish too. What
goes into the ConfigMap is decided by the publisher from the API's current state, not
from handler memory, so start-up, deletions while the operator was down and peers
all converge on the same rendering.

kopf keeps its own bookkeeping in `status.kopf` (not in annotations), and no finalizer
is needed, so the operator writes only the status subresource of policies.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes import client

from vigil.api.config import AgentConfig
from vigil.api.policy import (
    ACCEPTED,
    CLUSTER_KIND,
    GROUP,
    VERSION,
    Policy,
    PolicyError,
    applied,
    disabled_probes,
    parse_policy,
    requested_probes,
)
from vigil.operator.kube import PLURALS, connection_info
from vigil.operator.publisher import ConfigPublisher
from vigil.operator.settings import OperatorSettings


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    kopf_config = kopf.OperatorSettings()
    kopf_config.persistence.progress_storage = kopf.StatusProgressStorage(name="kopf")
    kopf_config.persistence.diffbase_storage = kopf.StatusDiffBaseStorage(name="kopf")
    kopf_config.persistence.finalizer = f"{GROUP}/operator"
    kopf_config.peering.priority = settings.priority
    kopf_config.peering.mandatory = settings.peering is not None
    kopf_config.posting.level = 20  # INFO and up become Kubernetes Events
    kopf_config.watching.server_timeout = 300
    kopf_config.watching.client_timeout = 330
    return kopf_config


def plain(value: Any) -> Any:
    """kopf's body views as plain dicts and lists (what the models validate)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def verdict(body: Mapping[str, Any], base: AgentConfig | None = None) -> tuple[str, str, str]:
    """(status, reason, message) of the Accepted condition for one object.

    The message tells the tenant which of its requests are in force and where: a
    namespaced policy's only ever for the pods it selects.
    """
    try:
        policy = parse_policy(plain(body), base=base)
    except PolicyError as exc:
        return "False", "Invalid", "; ".join(exc.problems)
    return "True", "Valid", in_force(policy, base if base is not None else AgentConfig())


def in_force(policy: Policy, base: AgentConfig) -> str:
    """What an accepted policy adds, in words."""
    spec = policy.spec
    rules = len(spec.rules)
    rules_text = f"{rules} rule{'s' * (rules != 1)}"
    probes = requested_probes(spec.probes)
    if policy.kind == CLUSTER_KIND:
        off = disabled_probes(policy)
        parts = [f"node-wide: probes {', '.join(probes)}"] if probes else []
        if off:
            parts.append(f"off for everyone: {', '.join(off)}")
        return "; ".join([*parts, rules_text])
    everyone = [p for p in probes if getattr(base.probes, p).enabled]
    own = [p for p in probes if p not in everyone]
    parts = []
    if own:
        parts.append(f"probes {', '.join(own)} for the pods it selects")
    if everyone:
        parts.append(f"{', '.join(everyone)} already observed for every pod by the node")
    capture = applied(policy).capture
    if capture is not None:
        asked = capture.model_dump(by_alias=True, exclude_none=True, exclude_defaults=True)
        redact = asked.pop("redact", ())
        words = [f"{key} {value}" for key, value in sorted(asked.items())]
        if redact:
            words.append(f"{len(redact)} redaction{'s' * (len(redact) != 1)}")
        parts.append(f"argv capture for its pods: {', '.join(words)}")
    parts.append(f"{rules_text} on its pods' events")
    return "; ".join(parts)


def build_registry(
    settings: OperatorSettings,
    publisher: ConfigPublisher,
    configuration: client.Configuration,
) -> kopf.OperatorRegistry:
    """A registry of its own, so several operators can run in one process (tests)."""
    registry = kopf.OperatorRegistry()
    tasks: set[asyncio.Task[None]] = set()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return connection_info(configuration, settings.namespace)

    @kopf.on.startup(registry=registry)
    async def start_publisher(**_: Any) -> None:
        tasks.add(asyncio.create_task(publisher.run(), name="vigil-publisher"))

    @kopf.on.cleanup(registry=registry)
    async def stop_publisher(**_: Any) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()

    async def judge(body: kopf.Body, patch: kopf.Patch, logger: kopf.Logger, **_: Any) -> None:
        status, reason, message = verdict(body, settings.base)
        generation = body.metadata.get("generation")
        previous = next(
            (
                c
                for c in body.status.get("conditions") or ()
                if isinstance(c, Mapping) and c.get("type") == ACCEPTED
            ),
            None,
        )
        unchanged = previous is not None and (
            previous.get("status"),
            previous.get("reason"),
            previous.get("message"),
            previous.get("observedGeneration"),
        ) == (status, reason, message, generation)
        transition = (
            previous.get("lastTransitionTime")
            if previous is not None and previous.get("status") == status
            else None
        ) or _now()
        patch.status["conditions"] = [
            {
                "type": ACCEPTED,
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": transition,
                "observedGeneration": generation,
            }
        ]
        patch.status["observedGeneration"] = generation
        if not unchanged:
            if status == "True":
                kopf.info(body, reason="Accepted", message=message)
            else:
                kopf.warn(body, reason="Invalid", message=message)
        logger.info("Accepted=%s (%s): %s", status, reason, message)
        publisher.request()

    async def listed_or_deleted(event: kopf.RawEvent, **_: Any) -> None:
        # A (re-)list happens at start, after a peering pause and after a broken watch:
        # exactly when deletions may have gone unseen.
        if event["type"] in (None, "DELETED"):
            publisher.request()

    for plural in PLURALS:
        resource = (GROUP, VERSION, plural)
        kopf.on.resume(*resource, registry=registry, id="judge")(judge)
        kopf.on.create(*resource, registry=registry, id="judge")(judge)
        kopf.on.update(*resource, registry=registry, id="judge", field="spec")(judge)
        kopf.on.event(*resource, registry=registry, id="listed_or_deleted")(listed_or_deleted)
    return registry
