"""Registry of RoPE factor searches, keyed by `--method`.

A search is a `Method`: its `options` (name → `Option`: default and help), `check(options,
n_factors)` for values that cannot work (cheap, before any model is loaded), `planned(n_factors,
options)` (how many objective evaluations it will make, start included: the progress bar's
total), and `run(evaluate, start, start_ppl, options, factor) -> (factors, ppl)`.

`evaluate(factors, **info) -> perplexity` is the journaled objective (`journal.Evaluator`): the
method passes float64 factor vectors and a few JSON-ready facts about each candidate (its round,
segment, shift, ...) that the history keeps; `start` is the starting λ and `start_ppl` its
perplexity, which the driver evaluates first; `factor` is the scale s. A method must be
deterministic given its options (randomness from `options["seed"]`), so a resumed search
replays the same evaluations.

Adding a method is one module in this package that registers its record.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from llama_jax.core.errors import ConfigError
from llama_jax.core.registry import Registry

Evaluate = Callable[..., float]


@dataclasses.dataclass(frozen=True)
class Option:
  default: Any
  help: str


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  options: Mapping[str, Option]
  planned: Callable[[int, dict], int]
  run: Callable[[Evaluate, np.ndarray, float, dict, float], tuple[np.ndarray, float]]
  check: Callable[[dict, int], None] = lambda options, n_factors: None
  description: str = ""


METHODS: Registry[Method] = Registry("search method", "--method")
register = METHODS.register
names = METHODS.names
get = METHODS.get


def resolve_options(method: Method, given: Mapping[str, Any]) -> dict[str, Any]:
  """The method's options: defaults overridden by `given`, checked by name and type."""
  unknown = sorted(set(given) - set(method.options))
  if unknown:
    raise ConfigError(f"search option(s) {unknown} do not apply to --method={method.name}; its "
                      f"options are {sorted(method.options)}")
  out = {}
  for name, option in method.options.items():
    value = given.get(name, option.default)
    want = type(option.default)
    if want is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)
    if want is tuple and isinstance(value, list):
      value = tuple(value)
    if isinstance(value, bool) != (want is bool) or not isinstance(value, want):
      raise ConfigError(f"--{name}={value!r} for --method={method.name}; allowed: a "
                        f"{want.__name__} ({option.help})")
    out[name] = value
  return out
