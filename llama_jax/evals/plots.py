"""PNG plots of evaluation results (matplotlib's Agg canvas; no display or pyplot state needed).

- `perplexity_figure(runs)`: perplexity against context length, one line per run (e.g. one per
  RoPE setting), log-scaled perplexity so a run that diverges does not flatten the others.
- `passkey_figure(result)`: the accuracy heat-map, depths (rows) x lengths (columns).
- `task_accuracy_figure(records)`: math / commonsense accuracy per dataset, one bar per run.
Both return the Figure (tests inspect it); `save(fig, path)` writes it atomically.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from llama_jax.core import files


def perplexity_figure(runs: Sequence[dict], metric: str = "ppl", title: str | None = None
                      ) -> Figure:
  """runs: perplexity result dicts (`label`, `results` = [{length, ppl, ...}, ...])."""
  if not runs:
    raise ValueError("no perplexity results to plot")
  fig = Figure(figsize=(7, 4.5), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  for i, run in enumerate(runs):
    if run.get("task") != "perplexity":
      raise ValueError(f"result {run.get('label', i)!r} is a {run.get('task')!r} result, not "
                       "perplexity; plot passkey results with passkey_figure")
    rows = sorted(run["results"], key=lambda r: r["length"])
    ax.plot([r["length"] for r in rows], [r[metric] for r in rows], marker="o",
            label=run.get("label", f"run {i}"))
  ax.set_xlabel("context length (tokens)")
  ax.set_ylabel("perplexity" if metric == "ppl" else metric.replace("_", " "))
  ax.set_yscale("log")
  values = [r[metric] for run in runs for r in run["results"] if r.get(metric, 0) > 0]
  if values:
    _plain_log_axis(ax.yaxis, min(values), max(values))
  modes = {run.get("mode") for run in runs}
  ax.set_title(title or "perplexity" + (f" ({modes.pop()})" if len(modes) == 1 else ""))
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  return fig


def plain_number(value: float, _pos=None) -> str:
  """78, 6.6, 1,250 — not matplotlib's log-axis 7.8×10¹."""
  if value >= 1e4:
    return f"{value:,.0f}"
  return f"{value:.4g}"


def log_ticks(lo: float, hi: float) -> list[float]:
  """4-12 round tick values spanning [lo, hi] on a log axis: decades, then 1-2-5 steps, then
  finer steps when the range is narrow."""
  lo, hi = min(lo, hi), max(lo, hi)
  first, last = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
  steps = [(1.0,), (1.0, 2.0, 5.0)] + [
      tuple(round(1 + i * step, 4) for i in range(round(9 / step))) for step in
      (0.5, 0.2, 0.1, 0.05, 0.02, 0.01)]
  ticks: list[float] = []
  for mantissas in steps:
    ticks = sorted({round(m * 10.0 ** k, 8) for k in range(first, last + 1) for m in mantissas
                    if lo / 1.05 <= m * 10.0 ** k <= hi * 1.05})
    if len(ticks) >= 4:
      break
  if len(ticks) > 12:
    ticks = ticks[::-(-len(ticks) // 12)]
  return ticks


def _plain_log_axis(axis, lo: float, hi: float) -> None:
  """Round ticks labelled as plain numbers on a log-scaled axis; no minor labels."""
  ticks = log_ticks(lo, hi)
  if ticks:
    bottom, top = min(lo, ticks[0]) / 1.08, max(hi, ticks[-1]) * 1.08
    axis.axes.set_ylim(bottom, top)
    axis.set_ticks(ticks)
  axis.set_major_formatter(ticker.FuncFormatter(plain_number))
  axis.set_minor_formatter(ticker.NullFormatter())


def passkey_figure(result: dict, title: str | None = None) -> Figure:
  """result: a passkey result dict (`lengths`, `depths`, `accuracy[i][j]`)."""
  if result.get("task") != "passkey":
    raise ValueError(f"result is a {result.get('task')!r} result, not passkey")
  lengths, depths = result["lengths"], result["depths"]
  grid = [[result["accuracy"][i][j] for i in range(len(lengths))] for j in range(len(depths))]
  fig = Figure(figsize=(1.2 + 0.9 * len(lengths), 1.2 + 0.5 * len(depths)), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  image = ax.imshow(grid, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
  ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
  ax.set_yticks(range(len(depths)), [f"{d:.0%}" for d in depths])
  ax.set_xlabel("prompt length (tokens)")
  ax.set_ylabel("key depth")
  for j, row in enumerate(grid):
    for i, value in enumerate(row):
      ax.text(i, j, f"{value:.0%}", ha="center", va="center", fontsize=8)
  fig.colorbar(image, ax=ax, label="accuracy")
  ax.set_title(title or f"passkey retrieval: {result.get('label', '')}".rstrip(": "))
  fig.tight_layout()
  return fig


def task_accuracy_figure(records: Sequence[dict], title: str = "accuracy") -> Figure:
  """records: task results (`datasets` = {name: {accuracy, ...}}, `average`, `label`); grouped
  bars, one group per dataset plus the average, one bar per run."""
  if not records:
    raise ValueError("no task results to plot")
  names: list[str] = []
  for r in records:
    names += [d for d in r["datasets"] if d not in names]
  groups = names + ["average"]
  fig = Figure(figsize=(1.5 + 0.9 * len(groups) * max(1, len(records)) ** 0.5, 4.2), dpi=120)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 1, 1)
  width = 0.8 / len(records)
  for i, r in enumerate(records):
    values = [100 * r["datasets"][d]["accuracy"] if d in r["datasets"] else 0.0 for d in names]
    xs = [g + (i - (len(records) - 1) / 2) * width for g in range(len(groups))]
    ax.bar(xs, values + [100 * r["average"]], width, label=r.get("label", f"run {i}"))
  ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
  ax.set_ylabel("accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(title)
  ax.grid(True, axis="y", alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  return fig


def save(fig: Figure, path: str | os.PathLike) -> Path:
  return files.write_atomic(path, lambda f: fig.savefig(f, format="png"), binary=True)
