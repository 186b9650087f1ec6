"""The search's journal: every evaluation recorded as it finishes, replayed on resume.

`DIR/search_state.jsonl` is a log: its first line holds the search's settings (method, options,
model, data, target), then one line per evaluation (the factor vector, its perplexity, seconds,
the method's notes about it). Each evaluation is appended as one complete line in a single
write, flushed and fsync'ed before the search goes on, so a search killed at any moment leaves
every evaluation it finished; a torn last line (a crash inside that write) is dropped on load,
losing at most the evaluation in flight. (An append keeps each evaluation O(1) to record: a
file rewritten whole after every evaluation would cost O(n^2) over a 2,560-evaluation search.)
The first line is written atomically (`core.files`) together with the first evaluation.

Resuming needs no saved algorithm state: the methods are deterministic given their options and
the perplexities they see, so the rerun executes the same algorithm from the start and the
`Evaluator` answers its first calls from the journal — checking that each asks for exactly the
factors recorded at that index (a changed algorithm or setting is an error, not a silent mix) —
and calls the real objective only past the journal's end.
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from llama_jax.core import files, progress
from llama_jax.core.errors import ConfigError

STATE_FILE = "search_state.jsonl"
VERSION = 1


def _json_ppl(value: float):
  return float(value) if math.isfinite(value) else None  # JSON has no inf/nan


def _ppl(value) -> float:
  return float("inf") if value is None else float(value)


class Journal:
  """The evaluations of one search in `directory`, with the settings they were made under."""

  def __init__(self, directory: str | os.PathLike, settings: dict[str, Any]):
    self.path = Path(directory) / STATE_FILE
    self.settings = settings
    self.entries: list[dict] = []
    self._torn = False  # the file ends in a partial line, to cut before the next append
    if self.path.exists():
      header, self.entries, self._torn = _read(self.path)
      saved = header.get("settings", {})
      if saved != settings:
        changed = sorted(k for k in set(saved) | set(settings) if saved.get(k) != settings.get(k))
        raise ConfigError(
            f"{self.path} holds a search with different settings ({changed}); rerun the same "
            "command to resume it, or choose another --out for a new search")

  def __len__(self) -> int:
    return len(self.entries)

  def append(self, factors: np.ndarray, ppl: float, seconds: float, info: dict) -> None:
    entry = {"factors": [float(x) for x in factors], "ppl": _json_ppl(ppl),
             "seconds": round(seconds, 4), **info}
    line = json.dumps(entry) + "\n"
    if not self.path.exists() or self._torn:  # written whole: header, entries, this one
      header = json.dumps({"version": VERSION, "settings": self.settings}) + "\n"
      old = "".join(json.dumps(e) + "\n" for e in self.entries)
      files.write_text(self.path, header + old + line)
      self._torn = False
    else:
      with open(self.path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    self.entries.append(entry)


def _read(path: Path) -> tuple[dict, list[dict], bool]:
  """(header, evaluations, whether a torn last line was dropped)."""
  lines = path.read_text(encoding="utf-8").split("\n")
  # A complete file ends with a newline (tail == ""); a torn last line, without its newline,
  # is the evaluation that was in flight: dropped.
  complete, tail = lines[:-1], lines[-1]
  try:
    header = json.loads(complete[0])
    entries = [json.loads(line) for line in complete[1:]]
  except (IndexError, json.JSONDecodeError) as e:
    raise ConfigError(f"{path} is not a search journal ({e}); choose another --out") from None
  if header.get("version") != VERSION:
    raise ConfigError(f"{path} has journal version {header.get('version')!r}; this llama_jax "
                      f"reads version {VERSION}")
  return header, entries, bool(tail)


class Evaluator:
  """The journaled objective a method calls: `evaluator(factors, **info) -> perplexity`.

  Replays recorded evaluations first (checking the factors), then calls `objective` and journals
  each result. Non-finite perplexities are +inf. Tracks the count, the best value and a progress
  bar.
  """

  def __init__(self, objective: Callable[[np.ndarray], float], journal: Journal,
               n_factors: int, planned: int, desc: str = "search", bar: bool | None = None):
    self.objective, self.journal, self.n_factors = objective, journal, n_factors
    self.count = 0
    self.replayed = 0
    self.best = float("inf")
    self.history: list[dict] = []
    self.bar = progress.Bar(planned, desc, unit="eval", initial=min(len(journal), planned),
                            enabled=bar)

  def __call__(self, factors, **info) -> float:
    factors = np.asarray(factors, np.float64)
    if factors.shape != (self.n_factors,):
      raise ConfigError(f"a candidate has shape {factors.shape}; the model needs head_dim/2 = "
                        f"{self.n_factors} factors")
    index = self.count
    if index < len(self.journal):
      entry = self.journal.entries[index]
      if not np.array_equal(np.asarray(entry["factors"], np.float64), factors):
        raise ConfigError(
            f"{self.journal.path}: evaluation {index} was made with other factors than this run "
            "asks for (the method or its code changed); use another --out for a new search")
      ppl = _ppl(entry["ppl"])
      self.replayed += 1
    else:
      start = time.perf_counter()
      ppl = float(self.objective(factors))
      ppl = ppl if math.isfinite(ppl) else float("inf")
      self.journal.append(factors, ppl, time.perf_counter() - start, _plain(info))
      self.bar.update(1, ppl=f"{ppl:.4g}", best=f"{min(self.best, ppl):.4g}")
    self.count += 1
    self.best = min(self.best, ppl)
    self.history.append({"index": index, "ppl": _json_ppl(ppl), "best_ppl": _json_ppl(self.best),
                         **_plain(info)})
    return ppl

  def close(self) -> None:
    self.bar.close()


def _plain(info: dict) -> dict:
  """JSON-ready copies of the method's notes (NumPy scalars become Python numbers)."""
  out = {}
  for key, value in info.items():
    if isinstance(value, np.generic):
      value = value.item()
    elif isinstance(value, (tuple, list, np.ndarray)):
      value = [v.item() if isinstance(v, np.generic) else v for v in value]
    out[key] = value
  return out
