"""The NTK-by-parts ramp shared by `ntk_by_parts`, `yarn` and `dynamic_yarn` (YaRN paper §3.2).

The reference code (and HF) makes the ramp linear in the *pair index* between the dimensions
where a pair turns β_fast and β_slow times over the original length L — linear in log r, not in
r as the paper's Eq. 18 reads. It depends only on (β_fast, β_slow, d, b, L), never on s.
"""
import math

import jax.numpy as jnp
import numpy as np


def correction_dim(num_rotations: float, dim: int, base: float, length: int) -> float:
  """The pair index i at which L/λ_i = num_rotations."""
  return (dim * math.log(length / (num_rotations * 2 * math.pi))) / (2 * math.log(base))


def correction_range(beta_fast, beta_slow, dim, base, length, truncate=True):
  low = correction_dim(beta_fast, dim, base, length)
  high = correction_dim(beta_slow, dim, base, length)
  if truncate:
    low, high = math.floor(low), math.ceil(high)
  # HF clamps `high` at d-1 (not d/2-1); match it for parity.
  return max(low, 0), min(high, dim - 1)


def extrapolation_weight(rope, head_dim: int):
  """Per-pair weight of the original frequency: 1 for fast pairs, 0 for slow ones (float32)."""
  low, high = correction_range(rope.beta_fast or 32, rope.beta_slow or 1, head_dim,
                               rope.rope_theta, rope.original_length,
                               True if rope.truncate is None else bool(rope.truncate))
  if low == high:
    high += 0.001  # avoid a division by zero, as the reference does
  ramp = np.clip((np.arange(head_dim // 2, dtype=np.float32) - np.float32(low)) /
                 np.float32(high - low), 0.0, 1.0).astype(np.float32)
  return jnp.asarray(1.0 - ramp, jnp.float32)


def blend(rope, head_dim: int, factor):
  """inv_freq = θ/s·(1 − w) + θ·w, with θ/s formed as 1/(s·b^(2i/d)) like the reference."""
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
  pos_freqs = jnp.float32(rope.rope_theta) ** exponent
  extrapolation = 1.0 / pos_freqs
  factor = jnp.asarray(factor, jnp.float32)[..., None]
  interpolation = 1.0 / (factor * pos_freqs)
  w = extrapolation_weight(rope, head_dim)
  return interpolation * (1 - w) + extrapolation * w


def check_betas(rope, head_dim):
  fast, slow = rope.beta_fast or 32, rope.beta_slow or 1
  if fast < slow:
    raise ValueError(
        f"rope.beta_fast={fast} must be >= rope.beta_slow={slow} (beta_fast counts rotations "
        "of the high-frequency end)")
