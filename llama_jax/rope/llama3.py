"""Llama 3.1 scaling: NTK-by-parts with a ramp linear in r = L/λ (no temperature).

Wavelengths shorter than L/high_freq_factor keep θ, longer than L/low_freq_factor use θ/s, and
the band between blends with smooth = (L/λ − low)/(high − low).
"""
import math

import jax.numpy as jnp

from llama_jax.rope import registry


def frequencies(rope, head_dim, seq_len, values):
  inv_freq = registry.base_inv_freq(rope.rope_theta, head_dim)
  recip = (1.0 / values["factor"])[..., None]  # θ·(1/s): the same bits for a traced s
  length = float(rope.original_length)
  low_wavelen = length / rope.low_freq_factor
  high_wavelen = length / rope.high_freq_factor
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > low_wavelen, inv_freq * recip, inv_freq)
  smooth = (length / wavelen - rope.low_freq_factor) / (
      rope.high_freq_factor - rope.low_freq_factor)
  smoothed = (1 - smooth) * scaled * recip + smooth * scaled
  medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
  return registry.broadcast(jnp.where(medium, smoothed, scaled), 1.0, seq_len)


def check(rope, head_dim):
  if rope.high_freq_factor <= rope.low_freq_factor:
    raise ValueError(
        f"rope.high_freq_factor={rope.high_freq_factor} must be > "
        f"rope.low_freq_factor={rope.low_freq_factor}")


registry.register(registry.RopeMethod(
    name="llama3", frequencies=frequencies,
    required=("factor", "low_freq_factor", "high_freq_factor",
              "original_max_position_embeddings"),
    traced=("factor",), check=check, description="Llama 3.1 frequency-band scaling"))
