"""YaRN (Peng et al. 2023, Definition 3): NTK-by-parts plus an attention temperature.

The temperature is folded into cos/sin as `attention_scaling` (logits scale by its square).
Precedence as in HF: an explicit `attention_factor`; else, when both `mscale` and
`mscale_all_dim` are set, mscale(s, mscale)/mscale(s, mscale_all_dim); else 0.1·ln s + 1.
"""
import math

from llama_jax.rope import ramp, registry


def get_mscale(scale: float, mscale: float = 1.0) -> float:
  return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def attention_factor(rope) -> float:
  if rope.attention_factor is not None:
    return float(rope.attention_factor)
  if rope.mscale and rope.mscale_all_dim:
    return get_mscale(rope.factor, rope.mscale) / get_mscale(rope.factor, rope.mscale_all_dim)
  return get_mscale(rope.factor)


def frequencies(rope, head_dim, seq_len, values):
  # The temperature of a static factor is computed here in float64; a traced factor would need
  # an on-device logarithm (see `registry`), so only an explicit attention_factor is traced.
  scaling = values.get("attention_factor", attention_factor(rope))
  return registry.broadcast(ramp.blend(rope, head_dim, rope.factor), scaling, seq_len)


def check(rope, head_dim):
  ramp.check_betas(rope, head_dim)
  if rope.attention_factor is not None and rope.attention_factor <= 0:
    raise ValueError(f"rope.attention_factor={rope.attention_factor!r} must be > 0")


registry.register(registry.RopeMethod(
    name="yarn", frequencies=frequencies,
    required=("factor", "original_max_position_embeddings"),
    optional=("beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim",
              "truncate"),
    traced=("attention_factor",), check=check,
    description="YaRN: NTK-by-parts + attention temperature 0.1 ln s + 1"))
