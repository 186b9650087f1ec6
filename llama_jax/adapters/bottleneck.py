"""Bottleneck adapters as LLM-Adapters (Hu et al. 2023) computes them; `series.py` and
`parallel.py` register the two families, this module holds what they share.

The adapter function is f(u) = s · U(act(D(dropout(u)))) with D [*dims_in, b] and U
[b, *dims_out] (no biases), b = `bottleneck_size`, act one of ACTIVATIONS, s a float or, with
scaling='learned', a trained scalar per layer and target starting at 1. Around a projection
y = x·W it sits in one of three places:

  before    y = (x + f(x))·W        (LLM-Adapters' "mh_adapter";   f: in → b → in)
  after     y = h + f(h), h = x·W   ("output_adapter";             f: out → b → out)
  parallel  y = x·W + f(x)          ("parallel_adapter";           f: in → b → out)

f runs in float32 (its input is cast up, its output cast back to the activation dtype).
Initialisation `bert` (LLM-Adapters' default) draws D and U from N(0, 0.02²), so the model is
*not* the base model at step 0; `mam_adapter` uses torch's nn.Linear default for D and zeros
for U (the base model at step 0).
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax.adapters import registry
from llama_jax.adapters.registry import RANK_AXIS, AdapterParam
from llama_jax.core.errors import ConfigError
from llama_jax.model.llama import project

# HF transformers' ACT2FN names (what LLM-Adapters' non_linearity selects).
ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "sigmoid": jax.nn.sigmoid,
    "linear": lambda x: x,
}
PLACEMENTS = ("before", "after", "parallel")
INITS = ("bert", "mam_adapter")
BERT_STD = 0.02


class BottleneckLinear(nnx.Module):
  """A projection seam with a bottleneck adapter before, after or parallel to it."""

  def __init__(self, p: registry.Projection, placement: str, size: int, activation: str,
               scaling, rate: float, init: str, rngs: nnx.Rngs):
    if placement == "before":
      d_shape, d_axes, u_shape, u_axes = p.in_shape, p.in_axes, p.in_shape, p.in_axes
    elif placement == "after":
      d_shape, d_axes, u_shape, u_axes = p.out_shape, p.out_axes, p.out_shape, p.out_axes
    else:
      d_shape, d_axes, u_shape, u_axes = p.in_shape, p.in_axes, p.out_shape, p.out_axes
    layers, layer_axis = p.layers, p.axes[0]
    down_shape, up_shape = layers + d_shape + (size,), layers + (size,) + u_shape
    if init == "bert":
      down = BERT_STD * jax.random.normal(rngs.params(), down_shape, jnp.float32)
      up = BERT_STD * jax.random.normal(rngs.params(), up_shape, jnp.float32)
    else:
      down = registry.kaiming_uniform(rngs.params(), down_shape, math.prod(d_shape))
      up = jnp.zeros(up_shape, jnp.float32)
    self.adapter_down = AdapterParam(down, logical_axes=(layer_axis, *d_axes, RANK_AXIS))
    self.adapter_up = AdapterParam(up, logical_axes=(layer_axis, RANK_AXIS, *u_axes))
    if scaling == "learned":
      self.adapter_scaling = AdapterParam(jnp.ones(layers, jnp.float32),
                                          logical_axes=(layer_axis,))
    self.constant_scaling = None if scaling == "learned" else float(scaling)
    self.placement, self.activation, self.rate = placement, activation, rate
    self.n_in, self.n_down, self.salt = p.n_in, len(d_shape), p.salt

  def adapt(self, u, ctx):
    """f(u) = s · U(act(D(dropout(u)))), in float32, returned in u's dtype."""
    down, up = self.adapter_down[...], self.adapter_up[...]
    u32 = registry.dropout(u, ctx, self.rate, self.salt).astype(down.dtype)
    out = project(ACTIVATIONS[self.activation](project(u32, down, self.n_down)), up, 1)
    s = (self.adapter_scaling[...] if self.constant_scaling is None else self.constant_scaling)
    return (out * s).astype(u.dtype)

  def __call__(self, x, w, ctx=None):
    w = w.astype(x.dtype)
    if self.placement == "before":
      return project(x + self.adapt(x, ctx), w, self.n_in)
    y = project(x, w, self.n_in)
    return y + self.adapt(y if self.placement == "after" else x, ctx)


def check_common(adapter) -> None:
  """Option checks shared by the series and parallel adapters (ConfigError)."""
  name = adapter.name
  registry.positive_int(name, "bottleneck_size", adapter.bottleneck_size)
  if adapter.non_linearity not in ACTIVATIONS:
    raise ConfigError(f"adapter.{name}.non_linearity={adapter.non_linearity!r}; allowed: "
                      f"{sorted(ACTIVATIONS)}")
  scaling = adapter.scaling
  if scaling != "learned":
    if not (isinstance(scaling, (int, float)) and not isinstance(scaling, bool)
            and math.isfinite(scaling)):
      raise ConfigError(f"adapter.{name}.scaling={scaling!r}; allowed: a number, or 'learned' "
                        "(a trained scalar per layer and target, starting at 1)")
    object.__setattr__(adapter, "scaling", float(scaling))
  object.__setattr__(adapter, "targets", registry.targets(name, adapter.targets))
  object.__setattr__(adapter, "dropout", registry.number(name, "dropout", adapter.dropout,
                                                         lo=0.0, hi=1.0, hi_open=True))
  if adapter.init not in INITS:
    raise ConfigError(f"adapter.{name}.init={adapter.init!r}; allowed: {list(INITS)}")


def install(adapter, model, rngs: nnx.Rngs, placement_of) -> None:
  for target in adapter.targets:
    p = registry.projection(model, target)
    p.replace_seam(BottleneckLinear(
        p, placement_of(target), adapter.bottleneck_size, adapter.non_linearity,
        adapter.scaling, adapter.dropout, adapter.init, rngs))
