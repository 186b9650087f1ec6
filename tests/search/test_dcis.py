"""DCIS against synthetic objectives: schedule, order, the range rule, discarding, flooring, and
convergence to a non-monotone optimum it never forces monotone."""
import math

import numpy as np
import pytest

from llama_jax.core.errors import ConfigError
from llama_jax.search import dcis, driver, factors, registry


def _target(p):
  """A non-monotone optimum with factors below 1 (the shape of DCIS's published factors)."""
  i = np.arange(p)
  return (1 + 3 * np.exp(-((i - 0.7 * p) / (0.25 * p)) ** 2)
          - 0.4 * np.exp(-((i - 0.3 * p) / (0.1 * p)) ** 2))


class Quadratic:
  """A separable quadratic perplexity with optimum `target`; records what it is asked."""

  def __init__(self, target, base=2.0):
    self.target, self.base, self.calls = np.asarray(target), base, []

  def __call__(self, lam):
    self.calls.append(np.array(lam))
    return self.base + float(np.mean((lam - self.target) ** 2))


def _run(objective, start, tmp_path, **options):
  return driver.search("dcis", objective, start, tmp_path, options=options, factor=4.0,
                       original_length=256, rope_theta=10000.0, bar=False)


@pytest.mark.parametrize("head_dim,want", [(128, 1260), (64, 620)])
def test_evaluation_count_follows_the_schedule(tmp_path, head_dim, want):
  p = head_dim // 2
  objective = Quadratic(_target(p))
  record = _run(objective, np.ones(p), tmp_path)
  assert len(objective.calls) == record["evaluations"] == want + 1  # the start, then C(2P - 2)
  assert dcis.planned(p, registry.resolve_options(registry.get("dcis"), {})) == want + 1
  rounds = [h["round"] for h in record["history"][1:]]
  sizes = [p // 2 ** r for r in range(1, int(math.log2(p)) + 1)]
  assert rounds == [n for n in sizes for _ in range(10 * (p // n))]


def test_segments_run_from_the_highest_dimensions_down():
  assert [(n, j) for n, _, j in dcis.segments(8)] == [
      (4, 4), (4, 0), (2, 6), (2, 4), (2, 2), (2, 0), (1, 7), (1, 6), (1, 5), (1, 4), (1, 3),
      (1, 2), (1, 1), (1, 0)]


def test_converges_near_a_non_monotone_optimum_without_forcing_monotonicity(tmp_path):
  p = 32
  target = _target(p)
  objective = Quadratic(target)
  record = _run(objective, factors.yarn_start(4.0, 2 * p, 10000.0, 256), tmp_path)
  lam = np.asarray(record["long_factor"])
  assert np.max(np.abs(lam - target)) < 0.1
  assert record["best_ppl"] < 2.0 + 1e-3 < 3 < record["start_ppl"]
  assert not np.all(np.diff(lam) >= 0) and lam.min() < 1  # neither monotone nor >= 1
  # Candidates that break monotonicity were scored all along, not filtered.
  assert sum(not np.all(np.diff(c) >= 0) for c in objective.calls) > 100


def test_round_one_has_no_zero_shift_and_can_leave_a_segment_worse(tmp_path):
  p = 8
  target = _target(p)
  objective = Quadratic(target)
  record = _run(objective, target, tmp_path)  # start at the optimum
  first = record["history"][1:11]
  shifts = [h["shift"] for h in first]
  np.testing.assert_allclose(shifts, np.linspace(-5, 5, 10))
  assert 0.0 not in shifts
  # The best of round 1's first segment moves away from the optimum: perplexity gets worse.
  assert min(h["ppl"] for h in first) > record["start_ppl"]


def test_child_ranges_follow_the_three_best_rule(tmp_path):
  p = 8
  objective = Quadratic(_target(p))
  record = _run(objective, np.ones(p), tmp_path)
  hist = record["history"][1:]
  by_segment = {}
  for h in hist:
    by_segment.setdefault((h["round"], tuple(h["segment"])), []).append(h)
  # Segment [4, 8) of round 1 → its halves [6, 8) and [4, 6) in round 2 search the child range.
  parent = sorted(by_segment[(4, (4, 8))], key=lambda h: (h["ppl"], h["index"]))
  step = 10 / 9
  k_best, top = parent[0]["shift"], [h["shift"] for h in parent[:3]]
  want = np.linspace(min(top) - step - k_best, max(top) + step - k_best, 10)
  for child in ((6, 8), (4, 6)):
    np.testing.assert_allclose([h["shift"] for h in by_segment[(2, child)]], want, atol=1e-12)


def test_discarded_candidates_keep_the_factors_and_the_range(tmp_path):
  p = 4

  def objective(lam):  # everything is >= 100 except the start itself
    return 5.0 if np.all(lam == 1.0) else 150.0

  record = _run(objective, np.ones(p), tmp_path)
  assert record["long_factor"] == [1.0] * p and record["best_ppl"] == 5.0
  # No candidate survived, so every child searches its parent's range again: [-5, 5].
  assert all(h["shift"] in (-5.0, 5.0) or -5 < h["shift"] < 5 for h in record["history"][1:])
  last = [h["shift"] for h in record["history"][-10:]]
  np.testing.assert_allclose(last, np.linspace(-5, 5, 10))


def test_scored_factors_are_floored_and_the_result_too(tmp_path):
  p = 4
  objective = Quadratic(np.full(p, -3.0))
  record = _run(objective, np.ones(p), tmp_path)
  assert min(c.min() for c in objective.calls) == pytest.approx(1e-4)
  assert min(record["long_factor"]) >= 1e-4


def test_bad_inputs_are_named_and_write_nothing(tmp_path):
  out = tmp_path / "out"
  with pytest.raises(ConfigError, match="power of two"):
    _run(Quadratic(np.ones(6)), np.ones(6), out)
  with pytest.raises(ConfigError, match="candidates"):
    _run(Quadratic(np.ones(4)), np.ones(4), out, candidates=1)

  class Model:  # an objective that knows its model's head_dim/2
    n_factors = 8

    def __call__(self, lam):
      raise AssertionError("never called")

  with pytest.raises(ConfigError, match=r"shape \(4,\); it needs head_dim/2 = 8"):
    _run(Model(), np.ones(4), out)
  with pytest.raises(ConfigError, match="do not apply to --method=dcis"):
    _run(Quadratic(np.ones(4)), np.ones(4), out, population=3)
  assert not out.exists()
