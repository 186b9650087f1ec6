"""LongRoPE's evolutionary search on synthetic objectives: its budget, the monotone constraint
(kept or dropped as configured), the grid, determinism."""
import numpy as np
import pytest

from llama_jax.core.errors import ConfigError
from llama_jax.search import driver, evolution, factors

S = 4.0


class Recorder:
  """Separable quadratic with optimum `target`, recording every candidate."""

  def __init__(self, target):
    self.target, self.calls = np.asarray(target), []

  def __call__(self, lam):
    self.calls.append(np.array(lam))
    return 2.0 + float(np.mean((lam - self.target) ** 2))


def _start(p):
  return factors.yarn_start(S, 2 * p, 10000.0, 256)


def _run(objective, tmp_path, p=16, **options):
  return driver.search("evolution", objective, _start(p), tmp_path, options=options, factor=S,
                       original_length=256, rope_theta=10000.0, bar=False)


SMALL = {"population": 8, "parents": 4, "mutations": 2, "crossovers": 2, "iterations": 6}


@pytest.mark.parametrize("reevaluate,want", [(True, 40 * 64), (False, 64 + 39 * 32)])
def test_budget_of_the_reference_setting(tmp_path, reevaluate, want):
  objective = Recorder(np.linspace(1, S, 8))
  record = _run(objective, tmp_path, p=8, reevaluate_parents=reevaluate)
  assert record["evaluations"] == len(objective.calls) == want == record["planned_evaluations"]


def test_monotone_variant_scores_only_monotone_factors_on_the_grid(tmp_path):
  p = 16
  i = np.arange(p)
  target = 1 + 2.5 * np.exp(-((i - 10) / 3) ** 2)  # non-monotone optimum
  objective = Recorder(target)
  record = _run(objective, tmp_path, p=p, seed=3)
  assert all(np.all(np.diff(c) >= 0) for c in objective.calls)
  lam = np.asarray(record["long_factor"])
  assert np.all(np.diff(lam) >= 0) and record["best_ppl"] < record["start_ppl"]
  assert min(c.min() for c in objective.calls) >= 1.0 - 1e-12
  assert max(c.max() for c in objective.calls) <= 1 + S + 1e-9


def test_non_monotone_variant_finds_a_non_monotone_optimum(tmp_path):
  p = 16
  i = np.arange(p)
  target = 1 + 2.5 * np.exp(-((i - 10) / 3) ** 2)
  mono = _run(Recorder(target), tmp_path / "m", p=p, seed=3)
  objective = Recorder(target)
  free = _run(objective, tmp_path / "f", p=p, seed=3, monotone=False)
  assert sum(not np.all(np.diff(c) >= 0) for c in objective.calls) > 1000
  assert not np.all(np.diff(free["long_factor"]) >= 0)
  assert free["best_ppl"] < mono["best_ppl"]  # the constraint excludes the optimum
  # Values stay on [1, 1 + s], on the 0.01 grid counted from 1.
  mutated = np.concatenate(list(objective.calls[1:]))
  on_grid = np.isclose((mutated - 1) / 0.01, np.round((mutated - 1) / 0.01), atol=1e-6)
  from_start = np.isin(mutated, _start(p))
  assert np.all(on_grid | from_start) and mutated.min() >= 1 and mutated.max() <= 1 + S + 1e-9


def test_same_seed_same_search_other_seed_other_search(tmp_path):
  target = np.linspace(1, S, 8)
  a = _run(Recorder(target), tmp_path / "a", p=8, seed=1, **SMALL)
  b = _run(Recorder(target), tmp_path / "b", p=8, seed=1, **SMALL)
  c = _run(Recorder(target), tmp_path / "c", p=8, seed=2, **SMALL)
  assert a["long_factor"] == b["long_factor"] and a["history"] == b["history"]
  assert a["history"] != c["history"]


def test_the_elite_survives_and_the_result_is_the_best_scored(tmp_path):
  objective = Recorder(np.linspace(1, S, 8))
  record = _run(objective, tmp_path, p=8, **SMALL)
  best = [h["best_ppl"] for h in record["history"]]
  assert best == sorted(best, reverse=True)
  assert record["best_ppl"] == record["lowest_ppl"] == min(h["ppl"] for h in record["history"])


def test_bad_settings_are_named(tmp_path):
  with pytest.raises(ConfigError, match="must equal --population"):
    _run(Recorder(np.ones(8)), tmp_path, p=8, population=10)
  with pytest.raises(ConfigError, match="non-decreasing start"):
    driver.search("evolution", Recorder(np.ones(4)), np.array([2.0, 1.0, 3.0, 4.0]), tmp_path,
                  factor=S, original_length=256, rope_theta=1e4, bar=False)


def test_crossover_keeps_monotone_children_monotone():
  rng = np.random.Generator(np.random.PCG64(0))
  for _ in range(200):
    a, b = np.sort(rng.uniform(1, 5, 12)), np.sort(rng.uniform(1, 5, 12))
    child = evolution.crossover(a, b, rng, monotone=True)
    assert np.all(np.diff(child) >= 0) and np.all((child == a) | (child == b))
