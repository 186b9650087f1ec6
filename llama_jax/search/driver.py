"""Runs one search against an objective and writes its results.

`search(...)` evaluates the start, runs the method through the journaled `Evaluator` (resuming
from `DIR/search_state.jsonl` when it exists), and writes, atomically:

- `DIR/search.json`: the method and its options, the settings, `long_factor` (the method's
  result), `best_ppl` (its perplexity), `start_ppl`, `evaluations` (objective evaluations, start
  included; `replayed` of them came from the journal), the lowest perplexity seen and its factors
  (DCIS's result need not be it), `evaluations_to_best` and the history (per evaluation: index,
  perplexity, best so far, the method's notes; the factors of every evaluation are in the
  journal);
- `DIR/rope.json`: HF `rope_parameters` applying the result (`factors.rope_parameters`).

Nothing is written before the first evaluation finishes.
"""
from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llama_jax.core import files
from llama_jax.search import factors as factors_lib
from llama_jax.search import registry
from llama_jax.search.journal import Evaluator, Journal

SEARCH_FILE = "search.json"
ROPE_FILE = "rope.json"


def _finite(x: float):
  return float(x) if math.isfinite(x) else None


def search(method: str, objective: Callable[[np.ndarray], float], start, out: str | os.PathLike,
           *, options: dict[str, Any] | None = None, factor: float, original_length: int,
           rope_theta: float, settings: dict[str, Any] | None = None,
           bar: bool | None = None) -> dict:
  """Runs `method` from `start` (float64[P]) minimising `objective`; returns the search record.

  `settings` (JSON-ready) describe everything the objective depends on (model, data, target):
  a journal made under other settings is refused. `factor`, `original_length` and `rope_theta`
  go into rope.json.
  """
  m = registry.get(method)
  opts = registry.resolve_options(m, options or {})
  n = getattr(objective, "n_factors", len(start))  # a model's head_dim/2
  start = factors_lib.check_factors(start, n, "the start factors")
  m.check(opts, n)
  settings = journal_settings(method, opts, start, factor, original_length, rope_theta,
                              settings)
  journal = Journal(out, settings)
  planned = m.planned(n, opts)
  evaluate = Evaluator(objective, journal, n, planned, desc=method, bar=bar)
  began = time.perf_counter()
  try:
    start_ppl = evaluate(start, phase="start")
    result, result_ppl = m.run(evaluate, start, start_ppl, opts, float(factor))
  finally:
    evaluate.close()
  seconds = time.perf_counter() - began
  lowest = min(range(len(journal)), key=lambda i: (journal.entries[i]["ppl"] is None,
                                                   journal.entries[i]["ppl"] or 0.0, i))
  record = {
      "method": method, "options": _jsonable(opts), "settings": settings,
      "long_factor": [float(x) for x in result], "best_ppl": _finite(result_ppl),
      "start_ppl": _finite(start_ppl), "evaluations": evaluate.count,
      "planned_evaluations": planned, "replayed": evaluate.replayed,
      "seconds_this_run": round(seconds, 3),
      "evaluation_seconds": round(sum(e.get("seconds", 0.0) for e in journal.entries), 3),
      "lowest_ppl": journal.entries[lowest]["ppl"],
      "lowest_factor": journal.entries[lowest]["factors"],
      "evaluations_to_best": evaluations_to_reach(evaluate.history, result_ppl),
      "history": evaluate.history,
  }
  stats = getattr(objective, "stats", None)  # e.g. the model objective's compilation count
  if stats is not None:
    record.update(stats())
  out = Path(out)
  files.write_json(out / SEARCH_FILE, record)
  files.write_json(out / ROPE_FILE, factors_lib.rope_parameters(result, factor, original_length,
                                                                rope_theta))
  return record


def journal_settings(method: str, options: dict, start, factor: float, original_length: int,
                     rope_theta: float, settings: dict | None = None) -> dict:
  """Everything a journal's evaluations depend on; a journal made under others is refused."""
  return {"method": method, "options": _jsonable(options), "factor": float(factor),
          "original_length": int(original_length), "rope_theta": float(rope_theta),
          "start": [float(x) for x in start], **(settings or {})}


def check_resumable(out: str | os.PathLike, method: str, options: dict, start, factor: float,
                    original_length: int, rope_theta: float, settings: dict | None = None):
  """Raises ConfigError if `out` holds a journal made under other settings (reads only)."""
  opts = registry.resolve_options(registry.get(method), options)
  Journal(out, journal_settings(method, opts, start, factor, original_length, rope_theta,
                                settings))


def evaluations_to_reach(history: list[dict], ppl: float) -> int | None:
  """The 1-based count of evaluations after which the best perplexity was <= `ppl`."""
  for entry in history:
    if entry["best_ppl"] is not None and entry["best_ppl"] <= ppl:
      return entry["index"] + 1
  return None


def _jsonable(options: dict) -> dict:
  return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
