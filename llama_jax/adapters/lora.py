"""LoRA (Hu et al. 2021), with rsLoRA scaling (Kalajdzievski 2023) and DoRA (Liu et al. 2024).

For a frozen projection y = x·W (W [*in, *out], this project's row-vector layout):

  LoRA   y = x·W + s · (dropout(x)·A)·B,   A [*in, r], B [r, *out],   s = alpha / r
  rsLoRA the same with s = alpha / sqrt(r)
  DoRA   y = x·W + (m/n − 1) ⊙ (x'·W) + (m/n) ⊙ s·(x'·A)·B,   x' = dropout(x),
         n = ‖W + s·A·B‖ over the input axes (one norm per output unit), treated as a constant
         (no gradient, DoRA §4.3); m [*out] is trained and starts at n, so W' = W at step 0.
         Without dropout this is x·W' with W' = (m/n) ⊙ (W + s·A·B).

As in HF peft (and LLM-Adapters' fork of it): A starts as torch's nn.Linear default
(kaiming_uniform(a=√5): U(±1/√fan_in)), B at zero, so the model starts as the base; the adapter
branch runs in float32 whatever the compute dtype (the input is cast to the adapter's dtype,
the sum cast back), and with dropout active DoRA recomputes x'·W on the dropped input. The
peft formats (names, the [out, in] layout) are `interop/peft.py`'s.

`merge` folds the adapter into the base weights: W + s·A·B (LoRA), (m/n) ⊙ (W + s·A·B)
(DoRA), computed in float32 and cast to the weight's dtype.
"""
from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax.adapters import registry
from llama_jax.adapters.registry import RANK_AXIS, AdapterParam
from llama_jax.core.errors import ConfigError
from llama_jax.model.llama import project


def _delta_weight(a, b, scale: float):
  """s·A·B as a weight [*in, *out] (float32) from a [*in, r] and b [r, *out]."""
  r = a.shape[-1]
  ab = a.reshape(-1, r).astype(jnp.float32) @ b.reshape(r, -1).astype(jnp.float32)
  return (scale * ab).reshape(a.shape[:-1] + b.shape[1:])


def _column_norm(w, n_in: int):
  """‖w‖ over the first n_in (input) axes: one value per output unit, float32."""
  w = w.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(w * w, axis=tuple(range(n_in))))


class LoraLinear(nnx.Module):
  """A projection seam with a LoRA (or DoRA) branch; parameters stacked over the layers."""

  def __init__(self, p: registry.Projection, rank: int, scale: float, rate: float, dora: bool,
               rngs: nnx.Rngs):
    fan_in = math.prod(p.in_shape)
    self.lora_a = AdapterParam(
        registry.kaiming_uniform(rngs.params(), p.layers + p.in_shape + (rank,), fan_in),
        logical_axes=(p.axes[0], *p.in_axes, RANK_AXIS))
    self.lora_b = AdapterParam(jnp.zeros(p.layers + (rank,) + p.out_shape, jnp.float32),
                               logical_axes=(p.axes[0], RANK_AXIS, *p.out_axes))
    if dora:  # the true initial value ‖W‖ needs the base weights: `LoRA.initialize`
      self.magnitude = AdapterParam(jnp.ones(p.layers + p.out_shape, jnp.float32),
                                    logical_axes=(p.axes[0], *p.out_axes))
    self.n_in, self.scale, self.rate, self.dora, self.salt = p.n_in, scale, rate, dora, p.salt

  def __call__(self, x, w, ctx=None):
    y = project(x, w.astype(x.dtype), self.n_in)
    a, b = self.lora_a[...], self.lora_b[...]
    x_drop = registry.dropout(x, ctx, self.rate, self.salt)
    branch = project(project(x_drop.astype(a.dtype), a, self.n_in), b, 1) * self.scale
    if not self.dora:
      return (y.astype(branch.dtype) + branch).astype(y.dtype)
    w32 = w.astype(jnp.float32)
    norm = jax.lax.stop_gradient(_column_norm(w32 + _delta_weight(a, b, self.scale), self.n_in))
    ratio = self.magnitude[...] / norm
    base = y if x_drop is x else project(x_drop, w.astype(x.dtype), self.n_in)
    out = y.astype(jnp.float32) + (ratio - 1) * base.astype(jnp.float32) + ratio * branch
    return out.astype(y.dtype)


@registry.register
@dataclasses.dataclass(frozen=True)
class LoRA(registry.Adapter):
  """LoRA on any of q, k, v, o, gate, up, down; rsLoRA scaling; DoRA.

  Defaults are LLM-Adapters' finetune.py defaults (r 8, alpha 16, dropout 0.05, q and v); its
  reported LLaMA runs use r 32, alpha 64 on q, k, v, up, down.
  """
  name: ClassVar[str] = "lora"
  description: ClassVar[str] = "low-rank update W + s·A·B (rsLoRA scaling, DoRA)"
  mergeable: ClassVar[bool] = True

  rank: int = 8
  alpha: float = 16.0
  dropout: float = 0.05
  targets: tuple = ("q", "v")
  rslora: bool = False
  dora: bool = False

  def __post_init__(self):
    registry.positive_int(self.name, "rank", self.rank)
    object.__setattr__(self, "alpha", registry.number(self.name, "alpha", self.alpha, lo=0.0))
    object.__setattr__(self, "dropout", registry.number(self.name, "dropout", self.dropout,
                                                        lo=0.0, hi=1.0, hi_open=True))
    object.__setattr__(self, "targets", registry.targets(self.name, self.targets))
    for flag in ("rslora", "dora"):
      if not isinstance(getattr(self, flag), bool):
        raise ConfigError(f"adapter.lora.{flag}={getattr(self, flag)!r}; allowed: true or false")

  @property
  def scale(self) -> float:
    return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

  def install(self, model, rngs: nnx.Rngs) -> None:
    for target in self.targets:
      p = registry.projection(model, target)
      p.replace_seam(LoraLinear(p, self.rank, self.scale, self.dropout, self.dora, rngs))

  def _factors(self, params, target):
    """(the target's adapter leaves, its stacked weight, the weight's input axes)."""
    seam = registry.get_path(params, registry.seam_path(target))
    w = registry.get_path(params, registry.weight_path(target))
    return seam, w, w.ndim - seam["lora_b"].ndim + 1  # w [L, *in, *out], b [L, r, *out]

  def _adapted(self, w, a, b):
    """W + s·A·B for one layer, float32."""
    return w.astype(jnp.float32) + _delta_weight(a, b, self.scale)

  def initialize(self, params: dict) -> dict:
    """DoRA: m = ‖W + s·A·B‖ per output unit (‖W‖ with the zero-initialised B)."""
    if not self.dora:
      return params
    for target in self.targets:
      seam, w, n_in = self._factors(params, target)
      norm = jax.vmap(lambda w_, a, b, n=n_in: _column_norm(self._adapted(w_, a, b), n))(
          w, seam["lora_a"], seam["lora_b"])
      params = registry.set_path(params, registry.seam_path(target) + ("magnitude",),
                                 norm.astype(seam["magnitude"].dtype))
    return params

  def merge(self, params: dict) -> dict:
    """Base parameters with every target's W replaced by the merged weight (adapter dropped)."""
    for target in self.targets:
      seam, w, n_in = self._factors(params, target)

      def merged(w_, a, b, m=None, n=n_in):
        full = self._adapted(w_, a, b)
        if m is not None:
          full = full * (m / _column_norm(full, n))
        return full.astype(w_.dtype)

      extra = (seam["magnitude"],) if self.dora else ()
      new = jax.vmap(merged)(jnp.asarray(w), jnp.asarray(seam["lora_a"]),
                             jnp.asarray(seam["lora_b"]), *map(jnp.asarray, extra))
      params = registry.set_path(params, registry.weight_path(target), new)
      params = registry.drop_path(params, registry.seam_path(target))
    return params
