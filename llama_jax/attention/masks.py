"""Which keys a query may see: causal by index, and only within its own segment (packing)."""
from __future__ import annotations

import jax.numpy as jnp

MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)


def attention_mask(t: int, s: int, q_segment_ids=None, kv_segment_ids=None, q_offset=0,
                   shared_prefix: int = 0):
  """bool[B or 1, T, S]: key j visible to query i iff j <= q_offset + i and segments match.

  Segment id 0 marks padding and empty cache slots; equal ids attend to each other, so padded
  rows still see themselves and never produce an empty softmax. The first `shared_prefix` keys
  (prefix tuning's virtual tokens) match every segment.
  """
  q_idx = jnp.arange(t)[:, None] + q_offset
  kv_idx = jnp.arange(s)[None, :]
  mask = (kv_idx <= q_idx)[None]
  if q_segment_ids is not None or kv_segment_ids is not None:
    if q_segment_ids is None or kv_segment_ids is None:
      raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
    same = q_segment_ids[:, :, None] == kv_segment_ids[:, None, :]
    if shared_prefix:
      same = same | (kv_idx < shared_prefix)[None]
    mask = mask & same
  return mask
