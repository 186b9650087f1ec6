"""Blockwise ("flash") attention in pure JAX: O(sequence) memory on any backend.

Same semantics as `xla.attention` (causal by index with `q_offset`, equal segment ids, grouped
query heads sharing a key/value head), computed without the [T, S] score matrix:

- Forward: queries in blocks of `block_q`; for each, an online softmax over key blocks of
  `block_k` keeps a running max and sum in float32 (Milakov & Gimelshein 2018; Dao et al. 2022).
  Only key blocks that the causal mask can reach are visited (a dynamic trip count per query
  block, so it also holds when `q_offset` is a traced cache index). Saves the output and the
  per-row log-sum-exp.
- Backward (`jax.custom_vjp`, FlashAttention-2 order): for each key block, the query blocks
  that can see it recompute their probabilities from the saved log-sum-exp; dK/dV accumulate
  for the key block, dQ accumulates in a float32 carry. Residuals are q, k, v, out and the
  log-sum-exp: O(T + S), never O(T * S).
- GQA: queries are grouped as [K, H/K] against the K key/value heads; K/V are never repeated.

Lengths that are not multiples of the block sizes are padded and the padding masked out. A
query row that sees no key at all (impossible with this project's segment convention) gives a
finite average instead of NaN, as in the reference, though over the visited blocks only.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from llama_jax.attention.masks import MASK_VALUE


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None,
              block_size: int = 512, block_q: int | None = None, block_k: int | None = None):
  """q[B, T, H, D], k/v[B, S, K, D] → [B, T, H, D]. Query t sits at key index q_offset + t.

  `block_size` sets both block sizes unless `block_q` / `block_k` are given; blocks larger than
  the sequence shrink to it.
  """
  b, t, h, d = q.shape
  s, n_kv = k.shape[1], k.shape[2]
  if k.shape != v.shape or k.shape[0] != b or k.shape[3] != d:
    raise ValueError(f"chunked attention: k {k.shape} and v {v.shape} must both be "
                     f"[batch={b}, S, K, head_dim={d}] for q {q.shape}")
  if h % n_kv:
    raise ValueError(f"chunked attention: {n_kv} key/value heads must divide {h} query heads")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")
  bq = min(int(block_q or block_size), t)
  bk = min(int(block_k or block_size), s)
  if bq <= 0 or bk <= 0:
    raise ValueError(f"chunked attention: block sizes must be positive, got {bq}, {bk}")
  scale = d ** -0.5 if scale is None else float(scale)

  nq, nk = -(-t // bq), -(-s // bk)
  g = h // n_kv
  # [nq, B, K, G, bq, D]: the scanned block axis leads; heads before rows for batched matmuls.
  qb = _pad(q, 1, nq * bq).reshape(b, nq, bq, n_kv, g, d).transpose(1, 0, 3, 4, 2, 5)
  kb = _pad(k, 1, nk * bk).reshape(b, nk, bk, n_kv, d).transpose(1, 0, 3, 2, 4)
  vb = _pad(v, 1, nk * bk).reshape(b, nk, bk, n_kv, d).transpose(1, 0, 3, 2, 4)
  if q_segment_ids is None:
    segs = None
  else:
    # Padding rows get ids that match nothing real (and are masked by index anyway).
    qs = _pad(q_segment_ids.astype(jnp.int32), 1, nq * bq, value=-1)
    ks = _pad(kv_segment_ids.astype(jnp.int32), 1, nk * bk, value=-2)
    segs = (qs.reshape(b, nq, bq).swapaxes(0, 1), ks.reshape(b, nk, bk).swapaxes(0, 1))
  q_offset = jnp.asarray(q_offset, jnp.int32)
  out = _flash(_Static(bq, bk, s, scale), qb, kb, vb, segs, q_offset)
  out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, nq * bq, h, d)
  return out[:, :t]


def _pad(x, axis, size, value=0):
  extra = size - x.shape[axis]
  if not extra:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


class _Static(tuple):
  """Hashable static parameters: (block_q, block_k, true key length, scale)."""

  def __new__(cls, bq, bk, s, scale):
    return super().__new__(cls, (bq, bk, s, scale))

  bq = property(lambda self: self[0])
  bk = property(lambda self: self[1])
  s = property(lambda self: self[2])
  scale = property(lambda self: self[3])


def _block_mask(st: _Static, i, j, q_offset, segs):
  """bool[B|1, 1, 1, bq, bk] for query block i against key block j."""
  q_idx = q_offset + i * st.bq + jnp.arange(st.bq)
  kv_idx = j * st.bk + jnp.arange(st.bk)
  mask = (kv_idx[None, :] <= q_idx[:, None]) & (kv_idx < st.s)[None, :]
  mask = mask[None]
  if segs is not None:
    qs, ks = segs
    mask = mask & (qs[i][:, :, None] == ks[j][:, None, :])
  return mask[:, None, None]


def _key_block_end(st: _Static, i, q_offset, nk):
  """One past the last key block that query block i can see (causal block skipping)."""
  last_query = q_offset + (i + 1) * st.bq - 1
  return jnp.clip(last_query // st.bk + 1, 0, nk)


def _query_block_start(st: _Static, j, q_offset, nq):
  """The first query block that can see key block j."""
  return jnp.clip((j * st.bk - q_offset) // st.bq, 0, nq)


def _scores(st, qi, kj, mask):
  s = jnp.einsum("bkgqd,bksd->bkgqs", qi, kj, preferred_element_type=jnp.float32) * st.scale
  return jnp.where(mask, s, MASK_VALUE)


def _forward(st: _Static, qb, kb, vb, segs, q_offset):
  nq, b, n_kv, g, bq, d = qb.shape
  nk = kb.shape[0]

  def query_block(_, i):
    qi = qb[i]

    def key_block(j, carry):
      acc, m, l = carry
      s = _scores(st, qi, kb[j], _block_mask(st, i, j, q_offset, segs))
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.exp(s - m_new[..., None])
      alpha = jnp.exp(m - m_new)
      l = alpha * l + jnp.sum(p, axis=-1)
      pv = jnp.einsum("bkgqs,bksd->bkgqd", p.astype(vb.dtype), vb[j],
                      preferred_element_type=jnp.float32)
      return acc * alpha[..., None] + pv, m_new, l

    init = (jnp.zeros((b, n_kv, g, bq, d), jnp.float32),
            jnp.full((b, n_kv, g, bq), -jnp.inf, jnp.float32),
            jnp.zeros((b, n_kv, g, bq), jnp.float32))
    acc, m, l = jax.lax.fori_loop(0, _key_block_end(st, i, q_offset, nk), key_block, init)
    out = (acc / l[..., None]).astype(qb.dtype)
    return None, (out, m + jnp.log(l))

  _, (out, lse) = jax.lax.scan(query_block, None, jnp.arange(nq))
  return out, lse  # [nq, B, K, G, bq, D], f32[nq, B, K, G, bq]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st, qb, kb, vb, segs, q_offset):
  return _forward(st, qb, kb, vb, segs, q_offset)[0]


def _flash_fwd(st, qb, kb, vb, segs, q_offset):
  out, lse = _forward(st, qb, kb, vb, segs, q_offset)
  return out, (qb, kb, vb, segs, q_offset, out, lse)


def _flash_bwd(st, residuals, d_out):
  qb, kb, vb, segs, q_offset, out, lse = residuals
  nq, nk = qb.shape[0], kb.shape[0]
  # delta_i = sum_d dO_i * O_i = sum_j P_ij dP_ij: the softmax Jacobian's diagonal term.
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)

  def key_block(dq, j):
    kj, vj = kb[j], vb[j]

    def query_block(i, carry):
      dq, dk, dv = carry
      qi, doi = qb[i], d_out[i]
      s = _scores(st, qi, kj, _block_mask(st, i, j, q_offset, segs))
      p = jnp.exp(s - lse[i][..., None])
      dv = dv + jnp.einsum("bkgqs,bkgqd->bksd", p.astype(doi.dtype), doi,
                           preferred_element_type=jnp.float32)
      dp = jnp.einsum("bkgqd,bksd->bkgqs", doi, vj, preferred_element_type=jnp.float32)
      ds = (p * (dp - delta[i][..., None]) * st.scale).astype(qi.dtype)
      dk = dk + jnp.einsum("bkgqs,bkgqd->bksd", ds, qi, preferred_element_type=jnp.float32)
      dqi = jnp.einsum("bkgqs,bksd->bkgqd", ds, kj, preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_index_in_dim(dq, dq[i] + dqi, i, 0)
      return dq, dk, dv

    zeros = jnp.zeros(kj.shape, jnp.float32)
    start = _query_block_start(st, j, q_offset, nq)
    dq, dk, dv = jax.lax.fori_loop(start, nq, query_block, (dq, zeros, zeros))
    return dq, (dk.astype(kb.dtype), dv.astype(vb.dtype))

  dq0 = jnp.zeros(qb.shape, jnp.float32)
  dq, (dk, dv) = jax.lax.scan(key_block, dq0, jnp.arange(nk))
  return dq.astype(qb.dtype), dk, dv, None, None


_flash.defvjp(_flash_fwd, _flash_bwd)
