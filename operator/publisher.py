"""Render the accepted policies into the agents' ConfigMap, coalescing requests.

Handlers only *request* a publish; one task does them, one at a time, so a burst of
changes (every object resumed at start-up) becomes one write. Each publish reads the
ConfigMap first, then lists the policies, then writes conditionally on what it read:
whatever it writes reflects a list taken after the content it replaces was written.
So several writers (a paused peer's start-up publish, a hand edit) can never put an
older rendering over a newer one, and a conflict just means "publish again".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from vigil.api.config import AgentConfig
from vigil.api.policy import Policy, PolicyError, parse_policy
from vigil.operator.kube import Cluster, Conflict
from vigil.operator.reconcile import render, to_yaml
from vigil.operator.settings import OperatorSettings

log = logging.getLogger("vigil.operator")
MAX_CONFLICTS = 5


@dataclass(frozen=True)
class Published:
    changed: bool
    accepted: tuple[str, ...]
    rejected: tuple[str, ...]


def accepted_policies(
    objects: list[dict[str, object]], base: AgentConfig | None = None
) -> tuple[list[Policy], list[str]]:
    """The valid policies among raw objects, and the refs of the invalid ones."""
    policies: list[Policy] = []
    rejected: list[str] = []
    for obj in objects:
        try:
            policies.append(parse_policy(obj, base=base))
        except PolicyError as exc:
            rejected.append(exc.obj)
    return policies, rejected


@dataclass
class ConfigPublisher:
    cluster: Cluster
    settings: OperatorSettings
    writes: int = 0
    _wanted: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self) -> None:
        self._wanted.set()

    def publish_once(self) -> Published:
        """Bring the ConfigMap up to date with the cluster's policies (blocking)."""
        s = self.settings
        for _ in range(MAX_CONFLICTS):
            current = self.cluster.read_config_map(s.namespace, s.config_map, s.key)
            policies, rejected = accepted_policies(self.cluster.list_policies(), s.base)
            text = to_yaml(render(policies, s.base))
            refs = tuple(sorted(p.ref for p in policies))
            if current.text == text:
                return Published(False, refs, tuple(rejected))
            try:
                self.cluster.write_config_map(s.namespace, s.config_map, s.key, text, current)
            except Conflict as exc:
                log.info("%s; publishing again", exc)
                continue
            self.writes += 1
            log.info(
                "wrote ConfigMap %s/%s: %d accepted policies%s",
                s.namespace,
                s.config_map,
                len(refs),
                "".join(f"; {ref}" for ref in refs),
            )
            return Published(True, refs, tuple(rejected))
        raise Conflict(f"ConfigMap {s.namespace}/{s.config_map} kept changing")

    async def run(self) -> None:
        """Publish now, then on every request (and every resync period) until cancelled."""
        self._wanted.set()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), timeout=self.settings.resync_seconds)
            self._wanted.clear()
            try:
                await asyncio.to_thread(self.publish_once)
            except Exception as exc:
                log.warning("publishing the agent config failed, retrying: %s", exc)
                await asyncio.sleep(self.settings.retry_seconds)
                self._wanted.set()
