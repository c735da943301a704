"""PNG plots: accuracy/EPS vs latency with Pareto fronts (paper §5.2) and attention maps. Each figure has its own
matplotlib Agg canvas (``utils.figures``): no pyplot, the host's backend untouched."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from pinlite_edge.utils.figures import agg_figure


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated when lower x (latency) and higher y (accuracy / EPS) are better,
    sorted by x."""
    idx = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -np.inf
    for i in idx:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def _points(result: dict[str, Any], metric: str) -> list[tuple[str, float, float]]:
    pts = []
    for r in result["rows"]:
        x = r["latency"]["per_clip"]["median_ms"]
        y = r["metrics"]["accuracy"] if metric == "accuracy" else (r.get("eps_vs_teacher") or {}).get("eps_mean")
        if y is not None and np.isfinite(y):
            pts.append((r["name"], float(x), float(y)))
    teacher = result.get("teacher") or {}
    if teacher.get("latency") and teacher.get("metrics"):
        y = teacher["metrics"]["accuracy"] if metric == "accuracy" else 1.0
        pts.append(("teacher FP32", float(teacher["latency"]["per_clip"]["median_ms"]), float(y)))
    return pts


def pareto_plot(result: dict[str, Any], metric: str, path: Path) -> Path | None:
    """``metric``: "accuracy" or "eps". Returns None when no row has the metric."""
    pts = _points(result, metric)
    if not pts:
        return None
    # Points are numbered and named in a key beside the axes: a dozen artefacts with near-equal accuracy would
    # otherwise print their names on top of each other.
    fig = agg_figure(figsize=(10, 4.8))
    ax = fig.subplots()
    fig.subplots_adjust(left=0.08, right=0.6, bottom=0.12, top=0.9)
    xs, ys = [p[1] for p in pts], [p[2] for p in pts]
    ax.scatter(xs, ys, s=36, zorder=3)
    for k, (_, x, y) in enumerate(pts, 1):
        ax.annotate(str(k), (x, y), fontsize=7, xytext=(3, 3 + 7 * (k % 3)), textcoords="offset points")
    key = "\n".join(f"{k:>2}  {name[:46]}  ({x:.2f} ms, {y:.3f})" for k, (name, x, y) in enumerate(pts, 1))
    fig.text(0.62, 0.9, key, fontsize=7, family="monospace", va="top")
    front = pareto_front([(x, y) for _, x, y in pts])
    ax.plot([xs[i] for i in front], [ys[i] for i in front], "--", color="tab:red", marker="o", mfc="none", ms=11,
            label="Pareto front", zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("median latency per clip (ms, log scale)")
    ax.set_ylabel("accuracy" if metric == "accuracy" else "EPS vs FP32 teacher")
    ax.set_title(f"{'Accuracy' if metric == 'accuracy' else 'EPS'} vs latency")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def attention_grid(maps: Mapping[str, np.ndarray], path: Path, clip_labels: Sequence[str] | None = None) -> Path | None:
    """One row per clip, one column per model (teacher first): audio tokens (rows) × frames (columns)."""
    if not maps:
        return None
    names = list(maps)
    n = min(m.shape[0] for m in maps.values())
    if n == 0:
        return None
    fig = agg_figure(figsize=(2.4 * len(names), 2.2 * n))
    axes = fig.subplots(n, len(names), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            ax = axes[i][j]
            ax.imshow(maps[name][i], cmap="magma", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name[:28], fontsize=7)
            if j == 0:
                ax.set_ylabel(clip_labels[i][-18:] if clip_labels and i < len(clip_labels) else f"clip {i}",
                              fontsize=7)
    fig.suptitle("attention (rows: audio tokens, columns: frames)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def write_plots(result: dict[str, Any], attention: Mapping[str, np.ndarray], out_dir: Path) -> list[Path]:
    written = [pareto_plot(result, "accuracy", out_dir / "accuracy_vs_latency.png"),
               pareto_plot(result, "eps", out_dir / "eps_vs_latency.png"),
               attention_grid(attention, out_dir / "attention_maps.png", result["data"].get("clip_ids_head"))]
    return [p for p in written if p is not None]
