"""Rotary position embedding in HF's rotate-half layout, computed in float32.

Pair i is (x_i, x_{i+d/2}). Angles m·θ_i, their cos/sin and the method's attention scaling are
formed in float32 whatever the activation dtype (bf16 cannot even hold positions above 256), and
the rotation itself runs in float32 before casting back.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.rope import registry
from llama_jax.rope.config import RopeConfig


def sequence_length(positions: jax.Array) -> jax.Array:
  """Per-example length seen by length-dependent methods: max position + 1."""
  return jnp.max(positions, axis=-1) + 1


def cos_sin(rope: RopeConfig, head_dim: int, positions: jax.Array,
            seq_len: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """positions int[B, T] → (cos, sin) float32[B, T, head_dim], attention scaling included."""
  positions = jnp.asarray(positions)
  if seq_len is None:
    seq_len = sequence_length(positions)
  inv_freq, scaling = registry.get(rope.rope_type).frequencies(rope, head_dim, seq_len)
  angles = positions.astype(jnp.float32)[..., None] * inv_freq[..., None, :]
  angles = jnp.concatenate([angles, angles], axis=-1)
  scaling = scaling[..., None, None]
  return computed_once(jnp.cos(angles) * scaling), computed_once(jnp.sin(angles) * scaling)


def computed_once(table: jax.Array) -> jax.Array:
  """`table` unchanged (exactly), but materialised once instead of recomputed by every consumer.

  XLA:CPU fuses elementwise producers into each consumer, so cos/sin would be re-evaluated for
  every element of every fused RoPE application: each head, queries and keys, forward and
  backward, every layer (152 sine evaluations of [B, T, N, D] per bench_34m step). A product with
  the identity is never fused into elementwise consumers and is exact in float32 at HIGHEST
  precision (x·1 + Σ 0), so the tables are computed once; on GPU/TPU it is a negligible
  [B·T, D] × [D, D] matmul. Measured on CPU: bench_34m step 6.23 → 5.83 s (min of 8, interleaved).
  """
  identity = jnp.eye(table.shape[-1], dtype=table.dtype)
  return jnp.einsum("...d,de->...e", table, identity, precision=jax.lax.Precision.HIGHEST)


def rotate_half(x: jax.Array) -> jax.Array:
  half = x.shape[-1] // 2
  return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """Rotates x[B, T, N, D] by cos/sin[B, T, D] (broadcast over the N heads)."""
  x32 = x.astype(jnp.float32)
  cos, sin = cos[:, :, None, :], sin[:, :, None, :]
  return (x32 * cos + rotate_half(x32) * sin).astype(x.dtype)
