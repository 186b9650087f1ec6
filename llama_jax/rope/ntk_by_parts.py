"""NTK-by-parts (YaRN paper Definition 2): interpolate slow pairs, keep fast ones, blend between.

No attention temperature; that is what `yarn` adds.
"""
from llama_jax.rope import ramp, registry


def frequencies(rope, head_dim, seq_len, values):
  return registry.broadcast(ramp.blend(rope, head_dim, values["factor"]), 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="ntk_by_parts", frequencies=frequencies,
    required=("factor", "original_max_position_embeddings"),
    optional=("beta_fast", "beta_slow", "truncate"), traced=("factor",), check=ramp.check_betas,
    description="NTK-by-parts: YaRN's ramp without the attention temperature"))
