"""Series bottleneck adapters (Houlsby et al. 2019 / Pfeiffer et al. 2021 style, as
LLM-Adapters places them on LLaMA): before a projection that reads the sublayer's input, after
one that writes its output.

LLM-Adapters maps gate_proj and up_proj to "mh_adapter" (y = (x + f(x))·W) and down_proj to
"output_adapter" (y = h + f(h), h = x·W); its fork has no placement for the attention
projections, and here q, k, v (readers of the sublayer input) go before and o (the writer of its
output) after, by the same rule. The paper's "series adapter after the MLP" (its reported rows,
b 256) is targets=('down',). Defaults are the fork's: targets gate, up, down (its default list),
bottleneck 256, tanh, scaling 1, init 'bert', no dropout. f is `bottleneck.py`'s.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

from flax import nnx

from llama_jax.adapters import bottleneck, registry

BEFORE = ("q", "k", "v", "gate", "up")  # the rest (o, down) get the adapter after


@registry.register
@dataclasses.dataclass(frozen=True)
class Series(registry.Adapter):
  name: ClassVar[str] = "series"
  description: ClassVar[str] = "bottleneck adapter before gate/up/q/k/v, after down/o"

  bottleneck_size: int = 256
  non_linearity: str = "tanh"
  scaling: float | str = 1.0
  targets: tuple = ("gate", "up", "down")
  init: str = "bert"
  dropout: float = 0.0

  def __post_init__(self):
    bottleneck.check_common(self)

  @staticmethod
  def placement(target: str) -> str:
    return "before" if target in BEFORE else "after"

  def install(self, model, rngs: nnx.Rngs) -> None:
    bottleneck.install(self, model, rngs, self.placement)
