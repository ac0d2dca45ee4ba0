"""Tracepoint subscriptions in policies: the operator binds each to its policy."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.api.config import AgentConfig
from vigil.api.policy import PolicyError, parse_policy
from vigil.operator.reconcile import render, to_yaml


def _policy(kind: str, name: str, namespace: str | None, subs: list[dict[str, Any]]) -> Any:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return parse_policy(
        {
            "apiVersion": "vigil.dev/v1alpha1",
            "kind": kind,
            "metadata": metadata,
            "spec": {"probes": {"tracepoints": {"subscriptions": subs}}},
        }
    )


SIGNALS = {"tracepoint": "signal:signal_generate", "fields": ["sig", "pid"]}


def test_render_binds_each_subscription_to_its_policy() -> None:
    spoofing = _policy("ProbePolicy", "web", "shop", [{**SIGNALS, "policy": "other/x"}])
    cluster = _policy("ClusterProbePolicy", "node", None, [SIGNALS])
    config = render([spoofing, cluster], AgentConfig())
    subs = config.probes.tracepoints.subscriptions
    assert config.probes.tracepoints.enabled
    assert [(s.tracepoint, s.policy) for s in subs] == [
        ("signal:signal_generate", "node"),  # cluster policies first
        ("signal:signal_generate", "shop/web"),
    ]
    # Same policies in any order, same bytes.
    assert to_yaml(render([cluster, spoofing], AgentConfig())) == to_yaml(config)


def test_a_bad_filter_in_a_policy_names_the_field_and_position() -> None:
    with pytest.raises(PolicyError) as caught:
        _policy("ProbePolicy", "web", "shop", [{**SIGNALS, "filter": "sig = 9"}])
    assert "spec.probes.tracepoints.subscriptions" in str(caught.value)
    assert "filter 'sig = 9': at 4: unexpected character '='" in str(caught.value)
