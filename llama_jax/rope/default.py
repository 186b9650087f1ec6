"""Plain RoPE (Su et al. 2021; LLaMA): θ_i = b^(-2i/d), no attention scaling."""
from llama_jax.rope import registry


def frequencies(rope, head_dim, seq_len, values):
  return registry.broadcast(registry.base_inv_freq(rope.rope_theta, head_dim), 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="default", frequencies=frequencies, description="plain rotary embedding"))
