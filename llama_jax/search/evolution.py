"""LongRoPE's evolutionary search of RoPE factors, as the DCIS authors run it as their baseline.

The setting of the DCIS repository's `longrope.py` (/work/shared/reference/rope_methods.md §7,
§9): a population of 64, seeded with the YaRN-equivalent λ and 63 of its mutants; each of 40
iterations scores the whole population, keeps the 32 best as parents and refills with 16
mutants (one of each of the 16 best parents) and 16 crossovers (two distinct random parents).
Factors live on a grid of step 0.01 over [1, 1 + s].

- Mutation: each factor, with probability 0.3, takes a random grid value — in the monotone
  variant (LongRoPE's constraint λ_i <= λ_{i+1}) one between its current neighbours (the grid
  then starts at the lower neighbour, as the reference builds it), otherwise any value of
  [1, 1 + s].
- Crossover: uniform — each factor comes from the second parent with probability 1/2; in the
  monotone variant only where the child stays non-decreasing (scanned from the first factor),
  so children are always monotone. The reference's loop, which in effect copies mostly the first
  few selected factors, is not reproduced.
- Cost: the reference re-scores the surviving parents every iteration, 40 × 64 = 2,560
  evaluations (`reevaluate_parents`, the default, keeps that accounting for the efficiency
  comparison with DCIS); without it only new individuals are scored: 64 + 39 × 32 = 1,312.

The result is the best individual of the last scored population (the elite survives, so it is
the best ever scored). Randomness: NumPy's PCG64 seeded with `seed`.
"""
from __future__ import annotations

import numpy as np

from llama_jax.core.errors import ConfigError
from llama_jax.search import registry
from llama_jax.search.registry import Option

OPTIONS = {
    "population": Option(64, "individuals per generation"),
    "parents": Option(32, "best individuals kept as parents"),
    "mutations": Option(16, "mutants per iteration (of the best parents)"),
    "crossovers": Option(16, "crossovers per iteration"),
    "iterations": Option(40, "generations scored"),
    "grid_step": Option(0.01, "factor grid step"),
    "mutation_prob": Option(0.3, "probability that a mutation changes each factor"),
    "monotone": Option(True, "keep factors non-decreasing (LongRoPE's constraint)"),
    "reevaluate_parents": Option(True, "re-score surviving parents each iteration (the "
                                       "reference's cost accounting)"),
    "seed": Option(0, "random seed"),
}


def check(options: dict, n_factors: int) -> None:
  o = options
  for name in ("population", "parents", "iterations"):
    if o[name] < 1:
      raise ConfigError(f"--{name}={o[name]} must be >= 1")
  if o["parents"] < 2 and o["crossovers"]:
    raise ConfigError(f"--parents={o['parents']}: crossovers need at least two parents")
  if o["mutations"] < 0 or o["crossovers"] < 0 or o["mutations"] > o["parents"]:
    raise ConfigError(f"--mutations={o['mutations']} must be within [0, parents="
                      f"{o['parents']}] and --crossovers={o['crossovers']} >= 0")
  if o["parents"] + o["mutations"] + o["crossovers"] != o["population"]:
    raise ConfigError(f"parents + mutations + crossovers = {o['parents']} + {o['mutations']} + "
                      f"{o['crossovers']} must equal --population={o['population']}")
  if not 0 < o["grid_step"] or not 0 <= o["mutation_prob"] <= 1:
    raise ConfigError(f"--grid_step={o['grid_step']} must be > 0 and --mutation_prob="
                      f"{o['mutation_prob']} within [0, 1]")


def planned(n_factors: int, options: dict) -> int:
  o = options
  if o["reevaluate_parents"]:
    return o["iterations"] * o["population"]
  return o["population"] + (o["iterations"] - 1) * (o["mutations"] + o["crossovers"])


def is_monotone(factors) -> bool:
  return bool(np.all(np.diff(factors) >= 0))


def _grid_value(rng, lo: float, hi: float, step: float) -> float:
  """A uniform draw from lo, lo + step, ... <= hi (lo itself when hi < lo + step); a value past
  hi by float rounding (hi − lo a whole number of steps) is hi."""
  count = int(np.floor((hi - lo) / step + 1e-9)) + 1 if hi >= lo else 1
  return min(lo + step * int(rng.integers(count)), max(lo, hi))


def mutate(parent, rng, upper: float, options: dict):
  child = np.array(parent, np.float64)
  step, prob, monotone = options["grid_step"], options["mutation_prob"], options["monotone"]
  last = len(child) - 1
  for i in range(len(child)):
    if rng.random() < prob:
      if monotone:
        lo = 1.0 if i == 0 else child[i - 1]
        hi = upper if i == last else child[i + 1]
      else:
        lo, hi = 1.0, upper
      child[i] = _grid_value(rng, lo, hi, step)
  return child


def crossover(first, second, rng, monotone: bool):
  child = np.array(first, np.float64)
  take = rng.random(len(child)) < 0.5
  for i in np.flatnonzero(take):
    if monotone:
      below = child[i - 1] if i > 0 else -np.inf
      above = child[i + 1] if i < len(child) - 1 else np.inf
      if not below <= second[i] <= above:
        continue
    child[i] = second[i]
  return child


def run(evaluate, start, start_ppl, options, factor):
  o = options
  start = np.array(start, np.float64)
  if o["monotone"] and not is_monotone(start):
    raise ConfigError("--monotone needs a non-decreasing start; this --init is not (use "
                      "--nomonotone or a monotone start such as yarn)")
  rng = np.random.Generator(np.random.PCG64(o["seed"]))
  upper = 1.0 + float(factor)
  population = [start] + [mutate(start, rng, upper, o) for _ in range(o["population"] - 1)]
  kinds = ["start"] + ["mutation"] * (o["population"] - 1)
  scores: list[float | None] = [start_ppl] + [None] * (o["population"] - 1)
  order = None
  for iteration in range(o["iterations"]):
    for i, individual in enumerate(population):
      if scores[i] is None or (o["reevaluate_parents"] and not (iteration == 0 and i == 0)):
        scores[i] = evaluate(individual, iteration=iteration, kind=kinds[i])
    order = sorted(range(len(population)), key=lambda i: (scores[i], i))
    parents = [population[i] for i in order[:o["parents"]]]
    parent_scores = [scores[i] for i in order[:o["parents"]]]
    if iteration == o["iterations"] - 1:
      return parents[0], parent_scores[0]
    mutants = [mutate(p, rng, upper, o) for p in parents[:o["mutations"]]]
    crossed = []
    for _ in range(o["crossovers"]):
      a, b = rng.choice(len(parents), size=2, replace=False)
      crossed.append(crossover(parents[a], parents[b], rng, o["monotone"]))
    population = parents + mutants + crossed
    kinds = (["parent"] * len(parents) + ["mutation"] * len(mutants)
             + ["crossover"] * len(crossed))
    scores = parent_scores + [None] * (len(mutants) + len(crossed))
  raise AssertionError("unreachable: iterations >= 1")


registry.register(registry.Method(
    name="evolution", options=OPTIONS, planned=planned, run=run, check=check,
    description="LongRoPE's evolutionary search (population 64, 40 iterations), the DCIS "
                "authors' baseline"))
