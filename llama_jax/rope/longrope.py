"""LongRoPE (Ding et al. 2024; Phi-3 "longrope"): a searched rescale factor λ_i per pair.

inv_freq_i = 1/(λ_i·b^(2i/d)), with `long_factor` when the length exceeds the original
length L (strictly) and `short_factor` otherwise. Attention factor, unless given:
sqrt(1 + ln s / ln L) with s = factor (or max_position_embeddings / L). DCIS searches
produce factor vectors for this method.
"""
import math

import jax.numpy as jnp

from llama_jax.rope import registry


def scale(rope) -> float:
  if rope.factor is not None:
    return float(rope.factor)
  return rope.max_position_embeddings / rope.original_length


def attention_factor(rope) -> float:
  if rope.attention_factor is not None:
    return float(rope.attention_factor)
  s = scale(rope)
  return 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(rope.original_length))


def frequencies(rope, head_dim, seq_len, values):
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
  pos = jnp.float32(rope.rope_theta) ** exponent
  short = 1.0 / (values["short_factor"] * pos)
  long = 1.0 / (values["long_factor"] * pos)
  use_long = (jnp.asarray(seq_len) > rope.original_length)[..., None]
  # The default factor sqrt(1 + ln s / ln L) of a static s is computed here in float64; an
  # explicit attention_factor (from the config or traced) replaces it.
  scaling = values.get("attention_factor", attention_factor(rope))
  return registry.broadcast(jnp.where(use_long, long, short), scaling, seq_len)


def check(rope, head_dim):
  for name in ("short_factor", "long_factor"):
    value = getattr(rope, name)
    if len(value) != head_dim // 2:
      raise ValueError(
          f"rope.{name} has {len(value)} entries; it needs head_dim/2 = {head_dim // 2}")
    if min(value) <= 0:
      raise ValueError(f"rope.{name} has a non-positive entry {min(value)}; factors must be > 0")


registry.register(registry.RopeMethod(
    name="longrope", frequencies=frequencies,
    required=("short_factor", "long_factor", "original_max_position_embeddings"),
    optional=("factor", "attention_factor"), depends_on_length=True, check=check,
    traced=("short_factor", "long_factor", "attention_factor"),
    description="LongRoPE per-dimension factors, long set beyond the original length"))
