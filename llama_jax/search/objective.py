"""Objectives λ → perplexity for the searches.

Any callable `objective(factors: float64[P]) -> float` will do (tests use synthetic ones); an
optional `n_factors` attribute lets the driver check the start's length before anything runs.

`PerplexityObjective` is the searches' real objective (§9 of the reference notes): perplexity
of a model at the target length T on documents truncated to one window each — BOS plus the
first T − 1 tokens — reported as exp(mean over documents of the per-document mean NLL), with λ
applied as the `longrope` RoPE that uses λ at every length and the 0.1 ln s + 1 temperature
(`factors.rope_config`).

How λ reaches the model is one seam, `scorer(factors) -> (NLL sums, scored tokens)` per window:

- `TracedScorer` (the default) builds the model once with the `longrope` structure and hands
  each candidate's λ to perplexity scoring as a traced RoPE input (`rope.RopeInputs`): the whole
  search compiles the scoring function once (`compiles` counts compilations).
- `RebuildScorer` rebuilds the model's config with the candidate's RoPE as static constants (one
  compilation per candidate); kept as the independent reference the traced path is tested
  against.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from llama_jax.core.errors import DataError
from llama_jax.evals import perplexity
from llama_jax.rope.inputs import RopeInputs
from llama_jax.search import factors as factors_lib


class Scorer(Protocol):
  def __call__(self, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ...


def truncated_documents(docs: Sequence[Sequence[int]], names: Sequence[str], target_len: int,
                        max_documents: int = 0) -> tuple[list[str], list[list[int]]]:
  """The documents long enough for one full window of `target_len` (BOS + T − 1 tokens), cut to
  T − 1 tokens; at most `max_documents` (0 = all). DataError naming the shortfall if none is."""
  need = target_len - 1
  kept = [(n, list(d[:need])) for n, d in zip(names, docs) if len(d) >= need]
  if not kept:
    longest = max((len(d) for d in docs), default=0)
    raise DataError(
        f"target_len={target_len} needs documents of at least {need} tokens (plus the BOS); the "
        f"longest of the {len(docs)} given has {longest}, {need - longest} short. Use longer "
        f"documents or a target_len of at most {longest + 1}")
  if max_documents:
    kept = kept[:max_documents]
  return [n for n, _ in kept], [d for _, d in kept]


class RebuildScorer:
  """Scores a candidate by rebuilding the model with its RoPE (one compilation per candidate)."""

  def __init__(self, model, docs, target_len: int, bos_id: int, rope_for: Callable,
               batch_size: int = 1, chunk_size: int = 1024):
    from llama_jax.model import spec as spec_lib
    self._spec_lib = spec_lib
    self.cfg, self.params = model.cfg, spec_lib.to_params(model)
    self.docs, self.target_len, self.bos_id = docs, target_len, bos_id
    self.wins = [w for i, d in enumerate(docs)
                 for w in perplexity.windows(len(d), target_len, target_len - 1, True, doc=i)]
    self.rope_for, self.batch_size, self.chunk_size = rope_for, batch_size, chunk_size
    self._cached_before = self._cache_size()

  def __call__(self, factors):
    model = self._spec_lib.from_params(self.cfg.replace(rope=self.rope_for(factors)),
                                       self.params)
    return perplexity.score_windows(model, self.docs, self.wins, self.target_len, self.bos_id,
                                    self.batch_size, self.chunk_size)

  @staticmethod
  def _cache_size() -> int:
    # jax.jit's cache of the scoring function: one entry per compilation.
    return perplexity._score._cache_size()

  @property
  def compiles(self) -> int:
    """Compilations of the scoring function since this scorer was made."""
    return self._cache_size() - self._cached_before


class TracedScorer(RebuildScorer):
  """Scores candidates through one model whose λ is a traced input (one compilation)."""

  def __init__(self, model, docs, target_len: int, bos_id: int, rope_for: Callable,
               batch_size: int = 1, chunk_size: int = 1024):
    super().__init__(model, docs, target_len, bos_id, rope_for, batch_size, chunk_size)
    start = np.ones(model.cfg.head_dim // 2)  # the structure only: λ comes in as an array
    self.model = self._spec_lib.from_params(self.cfg.replace(rope=rope_for(start)), self.params)

  def __call__(self, factors):
    lam = np.asarray(factors, np.float32)
    inputs = RopeInputs(short_factor=lam, long_factor=lam)
    return perplexity.score_windows(self.model, self.docs, self.wins, self.target_len,
                                    self.bos_id, self.batch_size, self.chunk_size, inputs)


class PerplexityObjective:
  """λ → truncated-document perplexity of `model` at `target_len` (see the module docstring)."""

  def __init__(self, model, docs: Sequence[Sequence[int]], target_len: int, factor: float,
               original_length: int, bos_id: int, batch_size: int = 1, chunk_size: int = 1024,
               scorer: Scorer | None = None):
    cfg = model.cfg
    self.n_factors = cfg.head_dim // 2
    self.rope_theta = cfg.rope.rope_theta
    self.factor, self.original_length, self.target_len = factor, original_length, target_len
    self.docs = [list(d) for d in docs]
    short = [len(d) for d in self.docs if len(d) < target_len - 1]
    if short or not self.docs:
      raise DataError(f"every document must hold target_len - 1 = {target_len - 1} tokens; "
                      f"got lengths {short or 'no documents'} (see truncated_documents)")
    self.scorer = scorer or TracedScorer(model, self.docs, target_len, bos_id, self.rope,
                                         batch_size, chunk_size)

  def rope(self, factors):
    """The RopeConfig that applies `factors` (what rope.json will hold)."""
    return factors_lib.rope_config(factors, self.factor, self.original_length, self.rope_theta)

  def __call__(self, factors) -> float:
    factors = factors_lib.check_factors(factors, self.n_factors, "candidate factors")
    sums, counts = self.scorer(factors)
    return perplexity.summarize(sums, counts)["ppl"]

  def stats(self) -> dict:
    """Facts for search.json: compilations of the scoring function, when the scorer counts."""
    compiles = getattr(self.scorer, "compiles", None)
    return {} if compiles is None else {"compiles": compiles}
