"""NTK-aware scaling (bloc97 2023; YaRN paper §3.1): a new base b' = b·s^(d/(d-2)).

The exponent is chosen so the lowest frequency is divided by exactly s while the highest (i=0)
is unchanged. HF dropped its static "ntk" type in v5; this follows the paper's formula.
"""
from llama_jax.rope import registry


def ntk_base(theta: float, factor, head_dim: int):
  return theta * factor ** (head_dim / (head_dim - 2))


def frequencies(rope, head_dim, seq_len, values):
  inv_freq = registry.base_inv_freq(ntk_base(rope.rope_theta, rope.factor, head_dim), head_dim)
  return registry.broadcast(inv_freq, 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="ntk", frequencies=frequencies, required=("factor",),
    description="NTK-aware base change b' = b * factor^(d/(d-2))"))
