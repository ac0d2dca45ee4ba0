"""Render the dashboards' panels from a real Prometheus into PNGs (matplotlib).

    python -m scripts.render_panels --prometheus http://127.0.0.1:9090 [--minutes 15] [--out docs]

draws every panel of deploy/grafana/*.json, one PNG per dashboard (docs/<uid>.png), from
range queries over the last minutes, with the variables at All. README's pictures come
from the real agent and workload of tests/integration/test_grafana_queries.py:

    VIGIL_RENDER_DOCS=1 .venv/bin/python -m pytest tests/integration/test_grafana_queries.py

(that test also renders into its temporary directory on every run).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
DASHBOARDS: Final = ROOT / "deploy" / "grafana"
COLUMNS: Final = 3
SCALE: Final = {
    "percentunit": (100.0, "%"),
    "bytes": (1 / 2**20, "MiB"),
    "Bps": (1 / 1024, "KiB/s"),
}


@dataclass(frozen=True)
class Series:
    label: str
    times: list[float]
    values: list[float]


def substitute(expr: str, rate_window: str) -> str:
    """A panel query as Grafana sends it with every variable at All."""
    for variable in ("cluster", "node", "namespace", "workload", "pod"):
        expr = expr.replace(f"${variable}", ".*")
    return expr.replace("$__rate_interval", rate_window)


def legend(template: str, labels: dict[str, str]) -> str:
    if template in ("", "__auto"):
        return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "value"
    # a label the series lacks (host processes have no namespace) reads "-", as in Grafana
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), "-"), template)


def query_range(base: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step}"}
    url = f"{base}/api/v1/query_range?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=10) as response:
        reply = json.loads(response.read())
    if reply["status"] != "success":
        raise RuntimeError(f"{expr}: {reply}")
    result: list[Any] = reply["data"]["result"]
    return result


def panel_series(
    base: str, panel: dict[str, Any], *, start: float, end: float, step: float, rate_window: str
) -> list[Series]:
    found = []
    for target in panel["targets"]:
        expr = substitute(target["expr"], rate_window)
        for result in query_range(base, expr, start, end, step):
            points = [(float(t), float(v)) for t, v in result["values"]]
            found.append(
                Series(
                    legend(target.get("legendFormat", ""), result["metric"]),
                    [t - start for t, _ in points],
                    [v for _, v in points],
                )
            )
    return found


def render_dashboard(
    base: str,
    board: dict[str, Any],
    out: Path,
    *,
    start: float,
    end: float,
    rate_window: str = "1m",
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = board["panels"]
    rows = math.ceil(len(panels) / COLUMNS)
    figure, axes = plt.subplots(rows, COLUMNS, figsize=(6 * COLUMNS, 3.2 * rows), squeeze=False)
    step = max(1.0, (end - start) / 200)
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        factor, shown = SCALE.get(unit, (1.0, unit))
        series = panel_series(base, panel, start=start, end=end, step=step, rate_window=rate_window)
        ax.set_title(panel["title"], fontsize=11, loc="left")
        if panel["type"] == "heatmap":
            _heatmap(ax, series)
        else:
            for one in sorted(series, key=lambda s: -max(s.values, default=0))[:8]:
                ax.plot(one.times, [v * factor for v in one.values], label=one.label[:40])
            if series:
                ax.legend(fontsize=7, loc="upper left")
            ax.set_ylabel(shown, fontsize=8)
        if not series:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("seconds", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    figure.suptitle(board["title"], fontsize=14, x=0.01, ha="left")
    figure.tight_layout()
    path = out / f"{board['uid']}.png"
    figure.savefig(path, dpi=72)
    plt.close(figure)
    return path


def _heatmap(ax: Any, series: list[Series]) -> None:
    """Buckets (cumulative `le` rates) as a heatmap of per-bucket rates."""
    buckets = sorted(
        (float(s.label), s) for s in series if s.label not in ("+Inf", "") and s.values
    )
    if not buckets:
        return
    previous = [0.0] * len(buckets[0][1].values)
    grid, edges = [], []
    for bound, one in buckets:
        grid.append([max(0.0, v - p) for v, p in zip(one.values, previous, strict=False)])
        previous = one.values
        edges.append(bound)
    ax.imshow(grid, aspect="auto", origin="lower", cmap="inferno", interpolation="nearest")
    labels = [f"{b * 1e3:.3g} ms" for b in edges]
    ticks = range(0, len(labels), max(1, len(labels) // 6))
    ax.set_yticks(list(ticks), [labels[i] for i in ticks])


def render_all(base: str, out: Path, *, start: float, end: float, rate_window: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [
        render_dashboard(
            base, json.loads(path.read_text()), out, start=start, end=end, rate_window=rate_window
        )
        for path in sorted(DASHBOARDS.glob("*.json"))
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.render_panels", description=__doc__)
    parser.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--rate-window", default="1m")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    end = time.time()
    for path in render_all(
        args.prometheus,
        args.out,
        start=end - args.minutes * 60,
        end=end,
        rate_window=args.rate_window,
    ):
        print(f"{path}: written")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
