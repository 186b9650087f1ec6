"""Attention kernels behind one function, chosen by `ModelConfig.attention`.

All take q[B, T, H, D], k/v[B, S, K, D] (K divides H: grouped-query attention), optional
segment ids (int[B, T] / int[B, S]; 0 = padding) and `q_offset`, the key index of the first
query (non-zero when decoding against a KV cache). Attention is always causal.
Implementations register in `IMPLEMENTATIONS`; `auto` picks the best available per backend.
"""
from __future__ import annotations

import importlib
from typing import Callable

import jax

# name -> "module:function", imported lazily so GPU/TPU-only kernels cost nothing on CPU.
IMPLEMENTATIONS: dict[str, str] = {
    "xla": "llama_jax.attention.xla:attention",
    "chunked": "llama_jax.attention.chunked:attention",
    "cudnn": "llama_jax.attention.cudnn:attention",
    "splash": "llama_jax.attention.splash:attention",
}


def resolve(impl: str) -> str:
  """Maps `auto` to a concrete kernel for the default backend."""
  if impl != "auto":
    return impl
  backend = jax.default_backend()
  if backend == "gpu":
    return "cudnn"
  if backend == "tpu":
    return "splash"
  return "xla"


def get(impl: str) -> Callable:
  impl = resolve(impl)
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"attention={impl!r}; allowed: {sorted(IMPLEMENTATIONS) + ['auto']}")
  module, fn = IMPLEMENTATIONS[impl].split(":")
  return getattr(importlib.import_module(module), fn)


def dot_product_attention(q, k, v, *, impl: str = "xla", q_segment_ids=None,
                          kv_segment_ids=None, q_offset=0, **kwargs):
  return get(impl)(q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                   q_offset=q_offset, **kwargs)
