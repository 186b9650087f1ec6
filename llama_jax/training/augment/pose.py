"""PoSE (Zhu et al. 2024, arXiv 2309.10400, §3.2): positional skip-wise training, two chunks.

Training rows of L_c tokens simulate a target length L_t: each example of ℓ tokens is cut into
two chunks, chunk 1 = the first r1 tokens at positions 0..r1-1 and chunk 2 = the rest at
positions r1+u, ..., ℓ-1+u, with r1 ~ U{1, ..., ⌈ℓ/2⌉} and the skip u ~ U{0, ..., L_t - ℓ}
(so the last position is at most L_t - 1). Chunk 1 stays at 0, the authors' later revision that
covers large relative distances more evenly. Attention and the loss are unchanged; evaluation
uses plain positions. It changes positions only, so it combines with any `rope_type` (the paper
pairs it with linear, NTK or YaRN scaling configured for s = L_t / L_c).

Here each document of a row is an example: positions restart at 0 in every document (packed
rows), ℓ is the document's length in the row, and r1 and u are drawn per document. An unpacked
row (`data.pack=False`, the paper's setting) is one document of ℓ = L_c tokens (fewer at its
end), drawn as in the paper. Draws come from `fold_in(rng, step)` (see `registry`).

Not done here: PoSE also skips *text* (chunk 2 continues the document further on, from up to
5·L_c tokens); the rows of this pipeline are contiguous text, so only the positions skip.

Logged per step: `augment_pose_r1` and `augment_pose_u` (means over the documents).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.core.errors import ConfigError
from llama_jax.rope.inputs import MAX_EXACT_POSITION
from llama_jax.training.augment import registry


def document_lengths(positions: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """int32 [rows, T+1]: the length of each segment id's document in the row (max position + 1;
  0 for ids not present). Segment ids of a row are < T + 1."""
  slots = positions.shape[1] + 1
  longest = jax.vmap(lambda p, s: jax.ops.segment_max(p, s, num_segments=slots))(
      positions, segment_ids)
  return jnp.maximum(longest + 1, 0)


def draw(rng: jax.Array, lengths: jax.Array, target: int):
  """(r1, u), int32 like `lengths`: r1 ~ U{1..⌈ℓ/2⌉}, u ~ U{0..target - ℓ} per document."""
  key_r, key_u = jax.random.split(rng)
  ell = jnp.maximum(lengths, 1)
  r1 = jax.random.randint(key_r, ell.shape, 1, (ell + 1) // 2 + 1, dtype=jnp.int32)
  u = jax.random.randint(key_u, ell.shape, 0, target - ell + 1, dtype=jnp.int32)
  return r1, u


def skip(positions, segment_ids, r1, u):
  """Positions [rows, T] with each document's u added from its position r1 on (per segment)."""
  tok_r1 = jnp.take_along_axis(r1, segment_ids, axis=1)
  tok_u = jnp.take_along_axis(u, segment_ids, axis=1)
  return jnp.where((segment_ids > 0) & (positions >= tok_r1), positions + tok_u, positions)


def check(options, model, seq_len: int) -> int:
  """The target length L_t; ConfigError naming the option for a bad value."""
  target = options["target_length"]
  if not (isinstance(target, int) and not isinstance(target, bool)) or target < 0:
    raise ConfigError(f"augment.pose.target_length={target!r}; allowed: an integer >= seq_len "
                      "(0 = model.max_position_embeddings)")
  target = target or model.max_position_embeddings
  if target > model.max_position_embeddings:
    raise ConfigError(
        f"augment.pose.target_length={target}: skipped positions reach {target - 1}, past what "
        f"the model can represent (model.max_position_embeddings="
        f"{model.max_position_embeddings}); allowed: seq_len={seq_len} .. "
        f"{model.max_position_embeddings}, with the RoPE scaling configured for it")
  if target < seq_len:
    raise ConfigError(f"augment.pose.target_length={target} is shorter than seq_len={seq_len}; "
                      f"allowed: seq_len .. model.max_position_embeddings "
                      f"({model.max_position_embeddings})")
  if target > MAX_EXACT_POSITION:
    raise ConfigError(f"augment.pose.target_length={target} exceeds 2^24 positions, past what "
                      "float32 angles represent exactly")
  return target


def build(options, model, seq_len: int):
  target = check(options, model, seq_len)

  def transform(batch, rng, step):
    del step  # the randomness is already a function of (seed, step)
    positions, segments = batch["positions"], batch["segment_ids"]
    lengths = document_lengths(positions, segments)
    r1, u = draw(rng, lengths, target)
    # Documents present in the rows (segment id 0 is padding).
    present = (lengths > 0).at[:, 0].set(False).astype(jnp.float32)
    count = jnp.maximum(jnp.sum(present), 1.0)
    return {**batch, "positions": skip(positions, segments, r1, u),
            registry.METRICS_KEY: {"pose_r1": jnp.sum(r1 * present) / count,
                                   "pose_u": jnp.sum(u * present) / count}}

  return transform


registry.register(registry.Augmentation(
    name="pose", options={"target_length": 0}, build=build,
    description="PoSE: two chunks per document, r1 ~ U{1..⌈ℓ/2⌉}, skip u ~ U{0..L_t-ℓ}"))
