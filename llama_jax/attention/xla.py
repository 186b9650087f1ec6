"""Reference attention: full score matrix, causal + segment mask, GQA without repeating K/V.

Scores and softmax are float32 whatever the input dtype; masked scores use a large finite
negative so a row that sees nothing gives zeros-weighted garbage instead of NaN. With Self-Extend
(`grouped`), a second score matrix from the grouped queries/keys replaces the first beyond the
neighbour window before the mask and softmax (`self_extend.py`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.attention import registry, self_extend
from llama_jax.attention.masks import MASK_VALUE, attention_mask


def _scores(q, k, n_kv, scale):
  b, t, h, d = q.shape
  qg = q.reshape(b, t, n_kv, h // n_kv, d)  # query head h uses kv head h // (H/K), as HF
  return jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32) * scale


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None,
              grouped: self_extend.Grouped | None = None, shared_prefix: int = 0):
  """q[B, T, H, D], k/v[B, S, K, D] → [B, T, H, D]. Query t sits at key index q_offset + t;
  the first `shared_prefix` keys are seen by every query (`masks.attention_mask`)."""
  b, t, h, d = q.shape
  n_kv = k.shape[2]
  scale = d ** -0.5 if scale is None else scale
  scores = _scores(q, k, n_kv, scale)
  if grouped is not None:
    near = self_extend.neighbours(jnp.arange(t)[:, None] + q_offset, jnp.arange(k.shape[1]),
                                  grouped.window)
    scores = jnp.where(near, scores, _scores(grouped.q, grouped.k, n_kv, scale))
  mask = attention_mask(t, k.shape[1], q_segment_ids, kv_segment_ids, q_offset,
                        shared_prefix)  # [B|1, T, S]
  scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(b, t, h, d).astype(q.dtype)


registry.register(registry.Kernel(
    name="xla", fn=attention, self_extend=True, prefix=True,
    description="reference: full score matrix, causal + segment mask, GQA"))
