"""Prefix tuning (Li & Liang 2021) as HF peft does it for LLaMA (and LLM-Adapters uses it).

Every layer gets `num_virtual_tokens` learned keys and values per key/value head, put ahead of
the sequence's own: every query attends to them (whatever its document in a packed row), they
carry no rotary embedding (peft hands them to the model as an already-rotated cache), and the
real tokens' positions start after them (HF derives position ids from the cache length), which
`Llama.position_offset` does here. No reparametrisation MLP (peft's prefix_projection=False);
initial values N(0, 1), as peft's nn.Embedding. With a KV cache the prefix is put ahead of the
cache at every call, so generation needs no cache slots for it.

The attention kernel must take a shared prefix of keys (`attention.registry.Kernel.prefix`):
`check_model` refuses the others (cuDNN, splash) with the kernels that can.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax import attention
from llama_jax.adapters import registry
from llama_jax.adapters.registry import TOKEN_AXIS, AdapterParam
from llama_jax.core.errors import ConfigError
from llama_jax.model import llama as llama_lib


class VirtualTokens(llama_lib.KeyValuePrefix):
  """Per-layer learned keys/values [L, n, K, head_dim] ahead of every sequence."""

  def __init__(self, shape: tuple[int, ...], axes: tuple, rngs: nnx.Rngs):
    self.key = AdapterParam(jax.random.normal(rngs.params(), shape, jnp.float32),
                            logical_axes=axes)
    self.value = AdapterParam(jax.random.normal(rngs.params(), shape, jnp.float32),
                              logical_axes=axes)
    self.length = shape[1]

  def __call__(self, k, v, kv_segment_ids):
    b = k.shape[0]

    def ahead(prefix, x):
      prefix = jnp.broadcast_to(prefix.astype(x.dtype)[None], (b,) + prefix.shape)
      return jnp.concatenate([prefix, x], axis=1)

    if kv_segment_ids is not None:  # any id: the kernel lets every query see these keys
      kv_segment_ids = jnp.pad(kv_segment_ids, ((0, 0), (self.length, 0)))
    return ahead(self.key[...], k), ahead(self.value[...], v), kv_segment_ids


@registry.register
@dataclasses.dataclass(frozen=True)
class Prefix(registry.Adapter):
  """Defaults: LLM-Adapters' finetune.py default of 30 virtual tokens (its reported runs: 10)."""
  name: ClassVar[str] = "prefix"
  description: ClassVar[str] = "learned per-layer keys/values ahead of the sequence (no RoPE)"

  num_virtual_tokens: int = 30

  def __post_init__(self):
    registry.positive_int(self.name, "num_virtual_tokens", self.num_virtual_tokens)

  def check_model(self, model_cfg) -> None:
    if model_cfg.attention != attention.AUTO and not attention.get(model_cfg.attention).prefix:
      raise ConfigError(
          f"adapter.name='prefix' needs an attention kernel that takes a shared prefix of keys; "
          f"model.attention={model_cfg.attention!r} cannot; allowed: "
          f"{attention.prefix_kernels()}")

  def install(self, model, rngs: nnx.Rngs) -> None:
    self.check_model(model.cfg)
    owner = model.layers.attention
    if type(owner.prefix) is not llama_lib.KeyValuePrefix or model.position_offset:
      raise ConfigError("the model already carries a prefix; install one adapter per model")
    k_axes = tuple(owner.k.get_metadata()["logical_axes"])  # [layers, embed, kv_heads, head_dim]
    cfg = model.cfg
    shape = (cfg.n_layers, self.num_virtual_tokens, cfg.n_kv_heads, cfg.head_dim)
    owner.prefix = VirtualTokens(shape, (k_axes[0], TOKEN_AXIS, *k_axes[2:]), rngs)
    model.position_offset = self.num_virtual_tokens
