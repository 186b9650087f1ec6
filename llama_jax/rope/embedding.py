"""Rotary position embedding in HF's rotate-half layout, computed in float32.

Pair i is (x_i, x_{i+d/2}). Angles m·θ_i, their cos/sin and the method's attention scaling are
formed in float32 whatever the activation dtype (bf16 cannot even hold positions above 256), and
the rotation itself runs in float32 before casting back. Per-example values (`inputs.RopeInputs`:
PI scale, position offset, the method's traced fields) enter as arrays.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.rope import registry
from llama_jax.rope.config import RopeConfig
from llama_jax.rope.inputs import RopeInputs, check


def sequence_length(positions: jax.Array) -> jax.Array:
  """Per-example length seen by length-dependent methods: max position + 1."""
  return jnp.max(positions, axis=-1) + 1


def frequencies(rope: RopeConfig, head_dim: int, seq_len: jax.Array,
                inputs: RopeInputs | None = None) -> tuple[jax.Array, jax.Array]:
  """(inv_freq float32[..., head_dim/2], attention scaling float32[...]) for lengths `seq_len`
  [...]: the method's, with its traced fields and the PI scale taken from `inputs`."""
  method = registry.get(rope.rope_type)
  seq_len = jnp.asarray(seq_len)
  given = None if inputs is None else inputs.given()
  values = registry.resolve_values(rope, method, head_dim, seq_len.shape, given)
  inv_freq, scaling = method.frequencies(rope, head_dim, seq_len, values)
  if inputs is not None and inputs.scale is not None:
    # θ·(1/g), the `linear` method's arithmetic: plain RoPE with scale g is PI with factor g.
    recip = 1.0 / jnp.broadcast_to(jnp.asarray(inputs.scale, jnp.float32), seq_len.shape)
    inv_freq = inv_freq * recip[..., None]
  return inv_freq, scaling


def cos_sin(rope: RopeConfig, head_dim: int, positions: jax.Array,
            seq_len: jax.Array | None = None, inputs: RopeInputs | None = None
            ) -> tuple[jax.Array, jax.Array]:
  """positions int[B, T] → (cos, sin) float32[B, T, head_dim], attention scaling included.

  `inputs` (shared or one value per row) may shift the positions (`offset`, also added to
  `seq_len`), scale them (`scale`) and replace the method's traced fields.
  """
  positions = jnp.asarray(positions)
  check(inputs, rope, head_dim, positions.shape[0] if positions.ndim == 2 else None)
  if inputs is not None and inputs.offset is not None:
    offset = jnp.asarray(inputs.offset, positions.dtype)[..., None]
    positions = positions + offset
    if seq_len is not None:
      seq_len = seq_len + offset[..., 0]
  if seq_len is None:
    seq_len = sequence_length(positions)
  inv_freq, scaling = frequencies(rope, head_dim, seq_len, inputs)
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
