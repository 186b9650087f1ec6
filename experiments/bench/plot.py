"""The README's benchmark tables and figure from `measure.sh`'s records.

  python experiments/bench/plot.py experiments/bench/results docs/bench_ratios.png

Reads DIR/{train,eval,generate}_<round>/*.json, prints the three tables (each ratio as the range
over rounds) as Markdown and writes one figure: llama_jax / HF + torch against sequence length
(train, eval) and per batch size (generate), the bars spanning the rounds.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def _load(root: Path, mode: str) -> list[dict]:
  name = {"train": "bench.json", "eval": "eval.json", "generate": "generate.json"}[mode]
  return [json.loads(p.read_text()) for p in sorted(root.glob(f"{mode}_*/{name}"))]


def _span(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "—"
  lo, hi = min(values), max(values)
  return f"{lo:.2f}" if abs(hi - lo) < 0.005 else f"{lo:.2f}–{hi:.2f}"


def _num(value, spec=",.1f"):
  return "—" if value is None else format(value, spec)


def _pick(run, **match):
  return [r for r in run["records"] if all(r.get(k) == v for k, v in match.items())]


def train_table(runs):
  lines = ["| seq_len × batch | llama_jax tokens/s | HF tokens/s, glibc defaults | "
           "HF tokens/s, llama_jax's heap | vs HF, glibc defaults | vs HF, same heap |",
           "|---|---|---|---|---|---|"]
  rows = {}
  tps = lambda rs: " / ".join(format(r["tokens_per_sec"], ",.0f") for r in rs)
  for seq in sorted({r["seq_len"] for run in runs for r in run["records"]}):
    mine = [r for run in runs for r in _pick(run, impl="auto", seq_len=seq)]
    fresh = [r for run in runs for r in _pick(run, impl="hf_torch_system_malloc", seq_len=seq)]
    tuned = [r for run in runs for r in _pick(run, impl="hf_torch", seq_len=seq)]
    rows[seq] = ([r.get("vs_hf_torch_system_malloc") for r in mine],
                 [r.get("vs_hf_torch") for r in mine])
    lines.append(f"| {seq} × {mine[0]['batch']} | {tps(mine)} | {tps(fresh)} | {tps(tuned)} | "
                 f"{_span(rows[seq][0])} | {_span(rows[seq][1])} |")
  return "\n".join(lines), rows


def eval_table(runs):
  lines = ["| window × batch | scoring tokens/s (llama_jax / HF) | scoring vs HF | "
           "forward vs HF | compiles while timed |", "|---|---|---|---|---|"]
  rows = {}
  for seq in sorted({r["seq_len"] for run in runs for r in run["records"]}):
    score = [r for run in runs for r in _pick(run, impl="llama_jax", seq_len=seq)]
    hf = [r for run in runs for r in _pick(run, impl="hf_torch", seq_len=seq)]
    fwd = [r for run in runs for r in _pick(run, impl="llama_jax_forward", seq_len=seq)]
    rows[seq] = ([r["vs_hf_torch"] for r in score], [r["vs_hf_torch"] for r in fwd])
    pairs = " ; ".join(f"{a['tokens_per_sec']:,.0f} / {b['tokens_per_sec']:,.0f}"
                       for a, b in zip(score, hf))
    lines.append(f"| {seq} × {score[0]['batch']} | {pairs} | {_span(rows[seq][0])} | "
                 f"{_span(rows[seq][1])} | {max(r['compiles_timed'] for r in score + fwd)} |")
  return "\n".join(lines), rows


def generate_table(runs):
  lines = ["| batch | llama_jax prefill / decode tok/s | best HF prefill / decode tok/s "
           "(cache) | prefill vs HF | decode vs HF | same tokens |", "|---|---|---|---|---|---|"]
  rows = {}
  for b in sorted({r["batch"] for run in runs for r in run["records"]}):
    mine = [r for run in runs for r in _pick(run, impl="llama_jax", batch=b)]
    best = []
    for run in runs:
      hf = [r for r in _pick(run, batch=b) if r["impl"].startswith("hf_torch")]
      best.append((max(hf, key=lambda r: r["prefill_tokens_per_sec"]),
                   max(hf, key=lambda r: r["decode_tokens_per_sec"] or 0)))
    rows[b] = ([r["vs_best_hf_prefill"] for r in mine], [r["vs_best_hf_decode"] for r in mine])
    same = all(r["same_tokens_as_llama_jax"] for run in runs for r in _pick(run, batch=b))
    lines.append(
        f"| {b} | " + " ; ".join(f"{r['prefill_tokens_per_sec']:,.0f} / "
                                 f"{_num(r['decode_tokens_per_sec'])}" for r in mine) + " | " +
        " ; ".join(f"{p['prefill_tokens_per_sec']:,.0f} / {_num(d['decode_tokens_per_sec'])} "
                   f"({d['impl'].removeprefix('hf_torch_')})" for p, d in best) +
        f" | {_span(rows[b][0])} | {_span(rows[b][1])} | {same} |")
  return "\n".join(lines), rows


def _bars(ax, xs, series, label, offset=0.0):
  import numpy as np
  lo = [min((v for v in s if v is not None), default=0) for s in series]
  hi = [max((v for v in s if v is not None), default=0) for s in series]
  mid = [(a + b) / 2 for a, b in zip(lo, hi)]
  ax.errorbar(np.asarray(xs) * (1 + offset), mid, yerr=[np.subtract(mid, lo),
                                                        np.subtract(hi, mid)],
              fmt="o-", capsize=4, label=label)


def main(root: str, png: str):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  root_path = Path(root)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
  for mode, table in (("train", train_table), ("eval", eval_table),
                      ("generate", generate_table)):
    runs = _load(root_path, mode)
    if not runs:
      continue
    text, rows = table(runs)
    print(f"### {mode} ({len(runs)} runs)\n\n{text}\n")
    print("\n".join(f"- run {i + 1}: {run['header']['command']}; allocator: "
                    f"{run['header'].get('allocator')}" for i, run in enumerate(runs)) + "\n")
    keys = sorted(rows)
    ax = axes[("train", "eval", "generate").index(mode)]
    if mode == "generate":
      _bars(ax, keys, [rows[k][0] for k in keys], "prefill")
      _bars(ax, keys, [rows[k][1] for k in keys], "decode", 0.03)
      ax.set_xlabel("batch (prompt 512, 128 new tokens, greedy)")
      ax.set_title("generate vs best HF generate")
    else:
      labels = (("HF on glibc defaults", "HF on llama_jax's heap") if mode == "train"
                else ("perplexity scoring", "model(ids) forward"))
      _bars(ax, keys, [rows[k][0] for k in keys], labels[0])
      _bars(ax, keys, [rows[k][1] for k in keys], labels[1], 0.03)
      ax.set_xlabel("sequence length (4,096 tokens per step / call)")
      ax.set_title(f"{mode} vs HF + torch")
    ax.set_xscale("log", base=2)
    ax.set_xticks(keys, [str(k) for k in keys])
    ax.axhline(1.0, color="gray", lw=0.8)
    ax.set_ylabel("llama_jax / HF throughput")
    ax.grid(True, alpha=0.3)
    ax.legend()
  fig.suptitle("configs/bench_34m.py on a 2-core CPU (bars: range over runs)", fontsize=10)
  fig.tight_layout()
  Path(png).parent.mkdir(parents=True, exist_ok=True)
  fig.savefig(png, dpi=110)


if __name__ == "__main__":
  main(*sys.argv[1:3])
