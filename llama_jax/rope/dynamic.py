"""Dynamic NTK (YaRN paper §3.3, HF `dynamic` semantics): the base grows with the length.

b' = b·(s·l/L − (s − 1))^(d/(d−2)) with l = max(current length, L) and L = max_position_embeddings
(HF reads the model maximum here, not original_max_position_embeddings). At l = L it is the
plain base. Unlike HF, which keeps the largest base seen in a stateful buffer, this is a pure
function of the current length, so cached decoding re-rotates keys (see `registry`).
"""
import jax.numpy as jnp

from llama_jax.rope import registry


def frequencies(rope, head_dim, seq_len, values):
  length = jnp.float32(rope.max_position_embeddings)
  seq = jnp.maximum(jnp.asarray(seq_len, jnp.float32), length)
  factor = values["factor"]
  # s·(l/L) rather than HF's (s·l)/L: with a constant s, XLA would fold s/L first (a
  # reassociation), so a traced s would not give the same bits (see `registry`).
  base = rope.rope_theta * (factor * (seq / length) - (factor - 1)) ** (
      head_dim / (head_dim - 2))
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
  inv_freq = 1.0 / (base[..., None] ** exponent)
  return registry.broadcast(inv_freq, 1.0, seq_len)


registry.register(registry.RopeMethod(
    name="dynamic", frequencies=frequencies, required=("factor",), traced=("factor",),
    depends_on_length=True,
    description="dynamic NTK: NTK base change with s growing with the sequence length"))
