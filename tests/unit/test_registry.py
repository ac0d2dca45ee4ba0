from __future__ import annotations

from vigil.agent.probes import registry
from vigil.api.probes import Probes


def test_every_configurable_probe_is_registered_and_back() -> None:
    assert list(registry.PROBES) == list(Probes.model_fields)


def test_only_process_is_on_by_default() -> None:
    assert Probes().enabled() == ["process"]
