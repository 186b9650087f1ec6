"""Parallel bottleneck adapters (He et al. 2022 style, per projection as LLM-Adapters does):
y = x·W + f(x), f: in → b → out (`bottleneck.py`).

LLM-Adapters puts one next to each target linear (its `--use_parallel_adapter`); its reported
rows (the "parallel to the MLP" placement, b 256) are targets=('up', 'down'): two bottlenecks
per block. Defaults are the fork's: targets q, k, v (its default list), bottleneck 256, tanh,
scaling 1, init 'bert', no dropout.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from flax import nnx

from llama_jax.adapters import bottleneck, registry


@registry.register
@dataclasses.dataclass(frozen=True)
class Parallel(registry.Adapter):
  name: ClassVar[str] = "parallel"
  description: ClassVar[str] = "bottleneck adapter parallel to each target projection"

  bottleneck_size: int = 256
  non_linearity: str = "tanh"
  scaling: float | str = 1.0
  targets: tuple = ("q", "k", "v")
  init: str = "bert"
  dropout: float = 0.0

  def __post_init__(self):
    bottleneck.check_common(self)

  @staticmethod
  def placement(target: str) -> str:
    del target
    return "parallel"

  def install(self, model, rngs: nnx.Rngs) -> None:
    bottleneck.install(self, model, rngs, self.placement)
