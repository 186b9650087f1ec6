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

- Self-Extend (`grouped`, `self_extend.py`): each block also scores the grouped queries
  against the grouped keys and keeps, per entry, the neighbour or the grouped score; the
  backward splits dS the same way between the two pairs of operands. Both products are formed
  for every visited block (twice the score FLOPs).

Lengths that are not multiples of the block sizes are padded and the padding masked out. A
query row that sees no key at all (impossible with this project's segment convention) gives a
finite average instead of NaN, as in the reference, though over the visited blocks only.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from llama_jax.attention import registry, self_extend
from llama_jax.attention.masks import MASK_VALUE


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None,
              block_size: int = 512, block_q: int | None = None, block_k: int | None = None,
              grouped: self_extend.Grouped | None = None, shared_prefix: int = 0):
  """q[B, T, H, D], k/v[B, S, K, D] → [B, T, H, D]. Query t sits at key index q_offset + t;
  the first `shared_prefix` keys match every segment (prefix tuning's virtual tokens).

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
  # Blocks lead (the scanned axis), then [B, K]; a query block's G*bq rows are its group's heads
  # times its positions: qb [nq, B, K, G*bq, D], kb/vb [nk, B, K, bk, D].
  qb = _pad(q, 1, nq * bq).reshape(b, nq, bq, n_kv, g, d).transpose(1, 0, 3, 4, 2, 5)
  qb = qb.reshape(nq, b, n_kv, g * bq, d)
  kb = _pad(k, 1, nk * bk).reshape(b, nk, bk, n_kv, d).transpose(1, 0, 3, 2, 4)
  vb = _pad(v, 1, nk * bk).reshape(b, nk, bk, n_kv, d).transpose(1, 0, 3, 2, 4)
  window, grouped_blocks = None, None
  if grouped is not None:
    if grouped.q.shape != q.shape or grouped.k.shape != k.shape:
      raise ValueError(f"chunked attention: grouped q {grouped.q.shape} / k {grouped.k.shape} "
                       f"must match q {q.shape} / k {k.shape}")
    window = int(grouped.window)
    gq = _pad(grouped.q, 1, nq * bq).reshape(b, nq, bq, n_kv, g, d).transpose(1, 0, 3, 4, 2, 5)
    gk = _pad(grouped.k, 1, nk * bk).reshape(b, nk, bk, n_kv, d).transpose(1, 0, 3, 2, 4)
    grouped_blocks = (gq.reshape(nq, b, n_kv, g * bq, d), gk)
  if q_segment_ids is None:
    segs = None
  else:
    # Padding rows get ids that match nothing real (and are masked by index anyway).
    qs = _pad(q_segment_ids.astype(jnp.int32), 1, nq * bq, value=-1)
    ks = _pad(kv_segment_ids.astype(jnp.int32), 1, nk * bk, value=-2)
    segs = (qs.reshape(b, nq, bq).swapaxes(0, 1), ks.reshape(b, nk, bk).swapaxes(0, 1))
  q_offset = jnp.asarray(q_offset, jnp.int32)
  out = _flash(_Static(bq, bk, s, scale, g, window, int(shared_prefix)), qb, kb, vb, segs,
               q_offset, grouped_blocks)
  out = out.reshape(nq, b, n_kv, g, bq, d).transpose(1, 0, 4, 2, 3, 5).reshape(b, nq * bq, h, d)
  return out[:, :t]


def _pad(x, axis, size, value=0):
  extra = size - x.shape[axis]
  if not extra:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, extra)
  return jnp.pad(x, widths, constant_values=value)


class _Static(tuple):
  """Hashable static parameters: block sizes, true key length, scale, query heads per kv head,
  Self-Extend window (None: off), leading keys visible to every segment."""

  def __new__(cls, bq, bk, s, scale, g, window=None, prefix=0):
    return super().__new__(cls, (bq, bk, s, scale, g, window, prefix))

  bq = property(lambda self: self[0])
  bk = property(lambda self: self[1])
  s = property(lambda self: self[2])
  scale = property(lambda self: self[3])
  g = property(lambda self: self[4])
  window = property(lambda self: self[5])
  prefix = property(lambda self: self[6])


def _visible(st: _Static, i, j, q_offset, segs, keys_first=False):
  """bool[B|1, bq, bk] (or [B|1, bk, bq]): which keys of block j block i's queries may see."""
  q_idx = q_offset + i * st.bq + jnp.arange(st.bq)
  kv_idx = j * st.bk + jnp.arange(st.bk)
  qa, ka = (1, 0) if keys_first else (0, 1)  # axes of queries and keys in the result
  expand = lambda x, axis: jnp.expand_dims(x, 1 - axis)
  mask = (expand(kv_idx, ka) <= expand(q_idx, qa)) & expand(kv_idx < st.s, ka)
  mask = mask[None]
  if segs is not None:
    qs, ks = segs
    same = jnp.expand_dims(qs[i], 2 - qa) == jnp.expand_dims(ks[j], 2 - ka)
    if st.prefix:
      same = same | expand(kv_idx < st.prefix, ka)[None]
    mask = mask & same
  return mask


def _near(st: _Static, i, j, q_offset, keys_first=False):
  """bool[bq, bk] (or [bk, bq]): where block (i, j) uses Self-Extend's neighbour scores."""
  q_idx = q_offset + i * st.bq + jnp.arange(st.bq)
  kv_idx = j * st.bk + jnp.arange(st.bk)
  if keys_first:
    return self_extend.neighbours(q_idx[None, :], kv_idx[:, None], st.window)
  return self_extend.neighbours(q_idx[:, None], kv_idx[None, :], st.window)


def _key_block_end(st: _Static, i, q_offset, nk):
  """One past the last key block that query block i can see (causal block skipping)."""
  last_query = q_offset + (i + 1) * st.bq - 1
  return jnp.clip(last_query // st.bk + 1, 0, nk)


def _query_block_start(st: _Static, j, q_offset, nq):
  """The first query block that can see key block j."""
  return jnp.clip((j * st.bk - q_offset) // st.bq, 0, nq)


# Layouts. Every matmul below is written in the form XLA's CPU and GPU emitters take without a
# transposing copy — lhs [batch, M, K], rhs [batch, K, N] — so the [rows, keys] score-sized
# tensors are never transposed; only the head_dim-wide q/k/dO blocks are, once, outside the
# loops. The forward works on scores [.., G*bq, bk]; the backward on their transpose
# [.., bk, G*bq], which makes dK and dV plain products and dQ a product of transposes.
def _forward(st: _Static, qb, kb, vb, segs, q_offset, grouped=None):
  nq, b, n_kv, rows, d = qb.shape
  nk = kb.shape[0]
  kt = jnp.swapaxes(kb, -1, -2)  # [nk, B, K, D, bk]
  if grouped is not None:
    gqb, gkt = grouped[0], jnp.swapaxes(grouped[1], -1, -2)

  def query_block(_, i):
    qi = qb[i]

    def key_block(j, carry):
      acc, m, l = carry
      s = jnp.einsum("bkmd,bkds->bkms", qi, kt[j], preferred_element_type=jnp.float32)
      s = (s * st.scale).reshape(b, n_kv, st.g, st.bq, st.bk)
      if grouped is not None:
        sg = jnp.einsum("bkmd,bkds->bkms", gqb[i], gkt[j], preferred_element_type=jnp.float32)
        sg = (sg * st.scale).reshape(b, n_kv, st.g, st.bq, st.bk)
        s = jnp.where(_near(st, i, j, q_offset), s, sg)
      mask = _visible(st, i, j, q_offset, segs)[:, None, None]  # [B|1, 1, 1, bq, bk]
      s = jnp.where(mask, s, MASK_VALUE)
      s = s.reshape(b, n_kv, rows, st.bk)
      m_new = jnp.maximum(m, jnp.max(s, axis=-1))
      p = jnp.exp(s - m_new[..., None])
      alpha = jnp.exp(m - m_new)
      l = alpha * l + jnp.sum(p, axis=-1)
      pv = jnp.einsum("bkms,bksd->bkmd", p.astype(vb.dtype), vb[j],
                      preferred_element_type=jnp.float32)
      return acc * alpha[..., None] + pv, m_new, l

    init = (jnp.zeros((b, n_kv, rows, d), jnp.float32),
            jnp.full((b, n_kv, rows), -jnp.inf, jnp.float32),
            jnp.zeros((b, n_kv, rows), jnp.float32))
    acc, m, l = jax.lax.fori_loop(0, _key_block_end(st, i, q_offset, nk), key_block, init)
    return None, ((acc / l[..., None]).astype(qb.dtype), m + jnp.log(l))

  _, (out, lse) = jax.lax.scan(query_block, None, jnp.arange(nq))
  return out, lse  # [nq, B, K, G*bq, D], f32[nq, B, K, G*bq]


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _flash(st, qb, kb, vb, segs, q_offset, grouped):
  return _forward(st, qb, kb, vb, segs, q_offset, grouped)[0]


def _flash_fwd(st, qb, kb, vb, segs, q_offset, grouped):
  out, lse = _forward(st, qb, kb, vb, segs, q_offset, grouped)
  return out, (qb, kb, vb, segs, q_offset, grouped, out, lse)


def _flash_bwd(st, residuals, d_out):
  qb, kb, vb, segs, q_offset, grouped, out, lse = residuals
  nq, b, n_kv, rows, d = qb.shape
  nk = kb.shape[0]
  # delta = rowsum(dO * O) = sum_j P_ij dP_ij: the softmax Jacobian's diagonal term.
  delta = jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), axis=-1)
  qt = jnp.swapaxes(qb, -1, -2)  # [nq, B, K, D, G*bq]
  dot = jnp.swapaxes(d_out, -1, -2)
  kt = jnp.swapaxes(kb, -1, -2)  # [nk, B, K, D, bk]
  # Self-Extend: the same loops for the grouped operands; dS goes to the pair whose score each
  # entry used. Without it, `gq` etc. are None and the loops are the plain FlashAttention-2 ones.
  gq, gk = (None, None) if grouped is None else grouped
  gqt = None if grouped is None else jnp.swapaxes(gq, -1, -2)
  gkt = None if grouped is None else jnp.swapaxes(gk, -1, -2)

  def key_block(dqts, j):
    kj, vj, ktj = kb[j], vb[j], kt[j]

    def query_block(i, carry):
      dqts, dks, dv = carry
      # Transposed scores [B, K, bk, G*bq], recomputed; probabilities from the saved lse.
      s = jnp.einsum("bksd,bkdm->bksm", kj, qt[i], preferred_element_type=jnp.float32)
      s = (s * st.scale).reshape(b, n_kv, st.bk, st.g, st.bq)
      if grouped is not None:
        near = _near(st, i, j, q_offset, keys_first=True)[:, None, :]  # [bk, 1, bq]
        sg = jnp.einsum("bksd,bkdm->bksm", gk[j], gqt[i], preferred_element_type=jnp.float32)
        s = jnp.where(near, s, (sg * st.scale).reshape(b, n_kv, st.bk, st.g, st.bq))
      mask = _visible(st, i, j, q_offset, segs, keys_first=True)[:, None, :, None]
      s = jnp.where(mask, s, MASK_VALUE)
      p = jnp.exp(s.reshape(b, n_kv, st.bk, rows) - lse[i][:, :, None, :])
      dv = dv + jnp.einsum("bksm,bkmd->bksd", p.astype(d_out.dtype), d_out[i],
                           preferred_element_type=jnp.float32)
      dp = jnp.einsum("bksd,bkdm->bksm", vj, dot[i], preferred_element_type=jnp.float32)
      ds = p * (dp - delta[i][:, :, None, :]) * st.scale
      parts = [(ds, qb, ktj)]
      if grouped is not None:
        ds5 = ds.reshape(b, n_kv, st.bk, st.g, st.bq)
        parts = [(jnp.where(near, ds5, 0).reshape(ds.shape), qb, ktj),
                 (jnp.where(near, 0, ds5).reshape(ds.shape), gq, gkt[j])]
      new_dqts, new_dks = [], []
      for (dsx, qx, ktx), dqt, dk in zip(parts, dqts, dks):
        dsx = dsx.astype(qb.dtype)
        new_dks.append(dk + jnp.einsum("bksm,bkmd->bksd", dsx, qx[i],
                                       preferred_element_type=jnp.float32))
        dqt_i = jnp.einsum("bkds,bksm->bkdm", ktx, dsx, preferred_element_type=jnp.float32)
        new_dqts.append(jax.lax.dynamic_update_index_in_dim(dqt, dqt[i] + dqt_i, i, 0))
      return tuple(new_dqts), tuple(new_dks), dv

    zeros = jnp.zeros(kj.shape, jnp.float32)
    start = _query_block_start(st, j, q_offset, nq)
    dqts, dks, dv = jax.lax.fori_loop(start, nq, query_block,
                                      (dqts, (zeros,) * len(dqts), zeros))
    return dqts, (tuple(dk.astype(kb.dtype) for dk in dks), dv.astype(vb.dtype))

  dqt0 = jnp.zeros((nq, b, n_kv, d, rows), jnp.float32)
  dqts0 = (dqt0,) if grouped is None else (dqt0, dqt0)
  dqts, (dks, dv) = jax.lax.scan(key_block, dqts0, jnp.arange(nk))
  dqs = tuple(jnp.swapaxes(dqt, -1, -2).astype(qb.dtype) for dqt in dqts)
  d_grouped = None if grouped is None else (dqs[1], dks[1])
  return dqs[0], dks[0], dv, None, None, d_grouped


_flash.defvjp(_flash_fwd, _flash_bwd)


registry.register(registry.Kernel(
    name="chunked", fn=attention, options=("block_size",), self_extend=True, prefix=True,
    description="blockwise online-softmax attention in pure JAX: O(sequence) memory"))
