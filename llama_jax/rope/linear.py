"""Position Interpolation (Chen et al. 2023): positions divided by s, i.e. θ_i / s.

Formed as θ_i·(1/s): what XLA compiles for a constant s anyway, and the same bits for a traced
one (see `registry`).
"""
from llama_jax.rope import registry


def frequencies(rope, head_dim, seq_len, values):
  recip = 1.0 / values["factor"]
  inv_freq = registry.base_inv_freq(rope.rope_theta, head_dim) * recip[..., None]
  return registry.broadcast(inv_freq, 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="linear", frequencies=frequencies, required=("factor",), traced=("factor",),
    description="position interpolation (PI): inv_freq / factor"))
