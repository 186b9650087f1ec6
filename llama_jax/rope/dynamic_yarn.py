"""Dynamic YaRN (YaRN paper §3.3): YaRN with s = max(factor, l/L) recomputed from the length l.

L is `original_max_position_embeddings` (the paper's s = l'/L; the reference repo's
`scaled_rope` copy). `factor` (default 1) is the scale a fine-tuned model starts from, as the
reference's `finetuned=True`. The ramp does not depend on s, so only the endpoint θ/s and the
temperature change with the length.
"""
import jax.numpy as jnp

from llama_jax.rope import ramp, registry


def frequencies(rope, head_dim, seq_len, values):
  floor = values.get("factor", jnp.float32(1.0))
  s = jnp.maximum(jnp.asarray(seq_len, jnp.float32) / jnp.float32(rope.original_length), floor)
  s = jnp.maximum(s, 1.0)
  mscale = 1.0 if rope.mscale is None else float(rope.mscale)
  scaling = jnp.where(s > 1, 0.1 * mscale * jnp.log(s) + 1.0, 1.0)
  return registry.broadcast(ramp.blend(rope, head_dim, s), scaling, seq_len)


registry.register(registry.RopeMethod(
    name="dynamic_yarn", frequencies=frequencies,
    required=("original_max_position_embeddings",),
    optional=("factor", "beta_fast", "beta_slow", "mscale", "truncate"),
    traced=("factor",), depends_on_length=True, check=ramp.check_betas,
    description="dynamic YaRN: YaRN with s = max(factor, length / original length)"))
