"""DCIS: divide-and-conquer incremental search of RoPE factors (Yang et al., EMNLP 2025).

The algorithm as the authors' code runs it (/work/shared/reference/rope_methods.md §9), on
P = head_dim/2 factors starting from the YaRN-equivalent λ:

    n ← P/2; ranges ← [[-5, 5], [-5, 5]]                # one range per current segment
    while n >= 1:                                        # segments of P/2, P/4, ..., 1
      for each segment S = [j, j+n), highest j first:    # low frequencies first
        lo, hi ← its range; step ← (hi − lo)/(C − 1)
        for k in lo, lo + step, ..., hi:                 # C candidates; 0 is generally not one
          score max(λ + k·1_S, 1e-4)                     # a uniform shift of the segment
        drop candidates with perplexity >= 100
        if any remain: λ[S] += k* of the best (greedy, in place: later segments see it);
          the child range is [min(K3) − step − k*, max(K3) + step − k*] for K3 the shifts of
          the three best, re-centred on the new λ
        else: λ unchanged, the child range is the segment's own
        both halves of S inherit the child range
      n ← n/2

Consequences kept on purpose (a faithful port): λ is not constrained to be monotone and may go
below 1 (only the scored copies are floored at 1e-4; λ itself is not clamped); a segment can end
worse than it started, since 0 is not among round 1's shifts; the result is the final λ, not the
lowest perplexity seen (the driver reports both). Cost: C·(2P − 2) evaluations — 1,260 for
head_dim 128 (segments 32…1), 620 for head_dim 64 — plus the start's own evaluation.
"""
from __future__ import annotations

import numpy as np

from llama_jax.core.errors import ConfigError
from llama_jax.search import registry
from llama_jax.search.registry import Option

OPTIONS = {
    "candidates": Option(10, "C: shifts tried per segment (the code's --itercnt)"),
    "initial_range": Option((-5.0, 5.0), "the shift range of round 1's two segments"),
    "max_ppl": Option(100.0, "candidates with perplexity >= this are discarded"),
    "floor": Option(1e-4, "scored factors are clamped at this minimum"),
}


def check(options: dict, n_factors: int) -> None:
  if n_factors < 2 or n_factors & (n_factors - 1):
    raise ConfigError(f"DCIS halves segments of head_dim/2 = {n_factors} factors down to 1; "
                      "head_dim/2 must be a power of two >= 2")
  if options["candidates"] < 2:
    raise ConfigError(f"--candidates={options['candidates']} must be >= 2 (C spans the range)")
  bounds = options["initial_range"]
  if len(bounds) != 2 or not float(bounds[1]) > float(bounds[0]):
    raise ConfigError(f"--initial_range={list(options['initial_range'])} must be two numbers "
                      "lo < hi")
  if not options["floor"] > 0 or not options["max_ppl"] > 0:
    raise ConfigError(f"--floor={options['floor']} and --max_ppl={options['max_ppl']} must be "
                      "> 0")


def planned(n_factors: int, options: dict) -> int:
  """Objective evaluations: the start, then C per segment over 2P − 2 segments."""
  return 1 + options["candidates"] * (2 * n_factors - 2)


def segments(n_factors: int):
  """(round's segment size n, segment index, first factor) in the order DCIS visits them."""
  n = n_factors // 2
  while n >= 1:
    for index in reversed(range(n_factors // n)):
      yield n, index, index * n
    n //= 2


def run(evaluate, start, start_ppl, options, factor):
  del factor  # DCIS shifts the start; the scale only shaped the start
  lam = np.array(start, np.float64)
  p_count = lam.shape[0]
  c, floor, max_ppl = options["candidates"], options["floor"], options["max_ppl"]
  current_ppl = start_ppl
  first = [float(x) for x in options["initial_range"]]
  ranges = {0: first, 1: first}  # the current round's range per segment index
  next_ranges: dict[int, list[float]] = {}
  size = None
  for n, index, j in segments(p_count):
    if n != size:  # a new round: the children's ranges become the current ones
      if size is not None:
        ranges, next_ranges = next_ranges, {}
      size = n
    lo, hi = ranges[index]
    step = (hi - lo) / (c - 1)
    scored = []
    for ci in range(c):
      k = lo + ci * step
      candidate = lam.copy()
      candidate[j:j + n] += k
      ppl = evaluate(np.maximum(candidate, floor), round=n, segment=[j, j + n], shift=k)
      if ppl < max_ppl:
        scored.append((ppl, ci, k))
    if scored:
      scored.sort(key=lambda e: (e[0], e[1]))  # ties: the earlier candidate
      best_ppl, _, best_k = scored[0]
      lam[j:j + n] += best_k
      current_ppl = best_ppl
      top = [k for _, _, k in scored[:3]]
      child = [min(top) - step - best_k, max(top) + step - best_k]
    else:
      child = [lo, hi]
    next_ranges[2 * index] = next_ranges[2 * index + 1] = child
  return np.maximum(lam, floor), current_ppl


registry.register(registry.Method(
    name="dcis", options=OPTIONS, planned=planned, run=run, check=check,
    description="divide-and-conquer incremental search (DCIS), the authors' algorithm"))
