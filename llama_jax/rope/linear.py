"""Position Interpolation (Chen et al. 2023): positions divided by s, i.e. θ_i / s."""
from llama_jax.rope import registry


def frequencies(rope, head_dim, seq_len):
  inv_freq = registry.base_inv_freq(rope.rope_theta, head_dim) / rope.factor
  return registry.broadcast(inv_freq, 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="linear", frequencies=frequencies, required=("factor",),
    description="position interpolation (PI): inv_freq / factor"))
