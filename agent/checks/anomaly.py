"""Per-subject baselines for `anomaly(signal)`: EWMA mean and variance, a band of k sigma.

Why EWMA and not a rolling window: a check may watch 500 subjects, each with
its own baseline per signal; EWMA keeps three numbers per baseline and costs a
few float operations per sample, where a window of N samples keeps N floats
and needs the variance re-summed (or a second queue). Its memory is about
1/alpha samples, so a lasting change of level becomes the new normal after
that many intervals: checks alert on change, not on a level (write a plain
threshold for that).

A sample is compared with the baseline *before* it is folded in (otherwise a
jump would widen its own band). The first `warmup` samples never fire.
`min_std` keeps a flat baseline (always 0 execs/s) from making any blip an
anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass

from vigil.api.checks import Anomaly


@dataclass(slots=True)
class Baseline:
    mean: float = 0.0
    variance: float = 0.0
    samples: int = 0

    def outside(self, value: float, settings: Anomaly) -> bool:
        """Whether `value` leaves the band (False while warming up)."""
        if self.samples < settings.warmup:
            return False
        std = max(float(self.variance) ** 0.5, settings.min_std)
        return bool(abs(value - self.mean) > settings.k * std)

    def update(self, value: float, alpha: float) -> None:
        """Fold `value` in (Finch, 'Incremental calculation of weighted mean and variance')."""
        if self.samples == 0:
            self.mean, self.variance = value, 0.0
        else:
            diff = value - self.mean
            increment = alpha * diff
            self.mean += increment
            self.variance = (1 - alpha) * (self.variance + diff * increment)
        self.samples += 1

    def observe(self, value: float, settings: Anomaly) -> bool:
        """Compare, then learn: True when `value` was outside the band."""
        verdict = self.outside(value, settings)
        self.update(value, settings.alpha)
        return verdict
