"""What probes hand to the exporters: metric descriptions, points and event metrics.

Probes never touch the OpenTelemetry API. A probe either
  - declares `event_metrics`: instruments fed by its events (a counter per exec,
    a histogram of connection durations), recorded by the telemetry layer with
    the event's bounded attributes; or
  - returns `MetricPoint`s from `collect()`: snapshots of its in-kernel maps
    (cumulative counters, gauges, log2 histograms) keyed by `vigil.cgroup.id`,
    which the telemetry layer resolves to pod attributes and merges per pod.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from vigil.agent.pipeline.events import Event
from vigil.agent.pipeline.histograms import Log2Histogram
from vigil.api import metrics as metric_registry
from vigil.api.events import AttributeValue

MetricKind = Literal["counter", "updown_counter", "gauge", "histogram"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One instrument: OTel name (`vigil.tcp.connections`) and UCUM unit (`s`, `By`)."""

    name: str
    kind: MetricKind
    unit: str
    description: str
    # Histograms from log2 slots: the factor from the kernel's unit to `unit`.
    scale: float = 1.0
    # Histograms fed by events: explicit bucket bounds in `unit` (empty: the SDK's).
    buckets: tuple[float, ...] = ()


def registered(name: str, *, scale: float = 1.0, buckets: tuple[float, ...] = ()) -> MetricSpec:
    """The MetricSpec of a metric of vigil.api.metrics (KeyError when it is not registered):
    name, instrument, unit and description come from the registry, never from a copy."""
    entry = metric_registry.get(name)
    return MetricSpec(
        entry.name, entry.instrument, entry.unit, entry.description, scale=scale, buckets=buckets
    )


@dataclass(slots=True)
class MetricPoint:
    """A snapshot value: cumulative for counters (since the probe attached), current for gauges."""

    spec: MetricSpec
    attributes: dict[str, AttributeValue]  # `vigil.cgroup.id` is resolved to pod attributes
    value: int | float | Log2Histogram


def one_per_event(_event: Event) -> float:
    """The default value: each event counts once (recognised, and not called, per event)."""
    return 1


@dataclass(frozen=True, slots=True)
class EventMetric:
    """Record `value(event)` on `spec` for each event of `kind` (None: skip the event)."""

    spec: MetricSpec
    kind: str
    value: Callable[[Event], float | None] = one_per_event
    # Event attributes kept beside the pod-level ones (must be bounded).
    attributes: tuple[str, ...] = ()
    constant_attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
