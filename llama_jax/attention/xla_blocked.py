"""The reference kernel with causal block skipping and a hand-written backward pass.

Query block i (rows [i*bq, (i+1)*bq)) attends to the key prefix [0, q_offset + (i+1)*bq); the
keys after it are causally masked for every row of the block, so leaving them out changes
nothing — each row's softmax runs over exactly the keys `xla` weights, with the same float32
scores and mask. With n blocks the scores cover (n+1)/2n of the T x S matrix (56% at n = 8).
Memory stays quadratic in the length: this is the fast kernel for the lengths a CPU trains on,
not for long contexts (`chunked` is).

The backward is written out (a custom VJP) instead of left to autodiff, for three reasons
measured on CPU (configs/bench_34m.py, one layer forward + backward):
- the softmax gradient uses FlashAttention's identity rowsum(dP * P) = rowsum(dO * O): a
  [rows, head_dim] product replaces a reduction over the [rows, keys] score block;
- the forward keeps the unnormalised probabilities and the row sums l, and the backward folds
  1/l into [rows, head_dim] operands (dO / l) and into the one elementwise pass that forms dS,
  so no normalised probability matrix is ever written;
- key and value gradients are formed transposed, so no P or dS block is ever transposed
  (one layer forward + backward: 5% faster, median of 25 paired runs).

Heads are moved in front once ([B, K, G, T, D]), so every block's matmuls are batched GEMMs
over contiguous [rows, head_dim] tiles. The split is static (Python-level) and needs a static
`q_offset`; a traced one (decoding against a KV cache) runs as one block over all keys.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from llama_jax.attention import registry
from llama_jax.attention.masks import MASK_VALUE, attention_mask

NUM_BLOCKS = 8  # measured on CPU at T = 512: 6-8 blocks fastest; 4 and 12 ~10% slower, 1 ~1.4x


def _blocks(t: int, s: int, q_offset, num_blocks: int) -> list[tuple[int, int, int]]:
  """(first row, end row, number of visible keys) per query block."""
  if not isinstance(q_offset, int):
    return [(0, t, s)]
  bq = -(-t // max(1, num_blocks))
  return [(start, min(start + bq, t), min(s, q_offset + min(start + bq, t)))
          for start in range(0, t, bq)]


def _probabilities(qh, kh, mask, keys, start, end, scale):
  """Unnormalised probabilities p = exp(s - max s) [B, K, G, rows, keys] (f32) and l = Σ p."""
  scores = jnp.einsum("bkgtd,bksd->bkgts", qh[:, :, :, start:end], kh[:, :, :keys],
                      preferred_element_type=jnp.float32) * scale
  scores = jnp.where(mask[:, None, None], scores, MASK_VALUE)
  p = jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True))
  return p, jnp.sum(p, axis=-1, keepdims=True)


def _forward(qh, kh, vh, masks, blocks, scale):
  outs, probs, sums = [], [], []
  for mask, (start, end, keys) in zip(masks, blocks):
    p, l = _probabilities(qh, kh, mask, keys, start, end, scale)
    pv = jnp.einsum("bkgts,bksd->bkgtd", p.astype(vh.dtype), vh[:, :, :keys],
                    preferred_element_type=jnp.float32)
    outs.append(pv / l)
    probs.append(p)
    sums.append(l)
  out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=3)  # f32 [B, K, G, T, D]
  return out, probs, sums


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attend(qh, kh, vh, masks, blocks, scale):
  return _forward(qh, kh, vh, masks, blocks, scale)[0]


def _attend_fwd(qh, kh, vh, masks, blocks, scale):
  out, probs, sums = _forward(qh, kh, vh, masks, blocks, scale)
  return out, (qh, kh, vh, out, probs, sums)  # the masks live on in the probabilities' zeros


def _attend_bwd(blocks, scale, residuals, d_out):
  qh, kh, vh, out, probs, sums = residuals
  s = kh.shape[2]
  delta = jnp.sum(d_out * out, axis=-1, keepdims=True)  # rowsum(dO * O) = rowsum(dP * P)
  dq, dk, dv = [], [], []
  for p, l, (start, end, keys) in zip(probs, sums, blocks):
    # dO / l: folds the softmax normalisation in
    d_out_l = (d_out[:, :, :, start:end] / l).astype(vh.dtype)
    dp = jnp.einsum("bkgtd,bksd->bkgts", d_out_l, vh[:, :, :keys],
                    preferred_element_type=jnp.float32)  # dP * l
    ds = p * (dp - delta[:, :, :, start:end] / l) * scale  # = scale * P * (dP - delta)
    ds = ds.astype(qh.dtype)
    dq.append(jnp.einsum("bkgts,bksd->bkgtd", ds, kh[:, :, :keys],
                         preferred_element_type=jnp.float32))
    # dK and dV are formed transposed ([head_dim, keys]): dK^T = Q^T dS reads dS in its own
    # layout, where dK = dS^T Q would make XLA write a transposed copy of every dS and P block.
    dk.append(jnp.einsum("bkgtd,bkgts->bkds", qh[:, :, :, start:end], ds,
                         preferred_element_type=jnp.float32))
    dv.append(jnp.einsum("bkgtd,bkgts->bkds", d_out_l, p.astype(vh.dtype),
                         preferred_element_type=jnp.float32))
  dq = dq[0] if len(dq) == 1 else jnp.concatenate(dq, axis=3)
  dk = _sum_prefixes(dk, blocks, s).swapaxes(2, 3)  # one [B, K, D, S] -> [B, K, S, D] transpose
  dv = _sum_prefixes(dv, blocks, s).swapaxes(2, 3)
  return (dq.astype(qh.dtype), dk.astype(kh.dtype), dv.astype(vh.dtype), None)  # masks: none


def _sum_prefixes(parts, blocks, s):
  """Σ_i parts[i] zero-padded to s keys (the last axis), where parts[i] covers block i's prefix.

  Assembled key segment by key segment (segment j is covered by blocks j, j+1, ...), so no
  padded copy of any part is ever written.
  """
  bounds = [0] + [keys for _, _, keys in blocks]
  pieces = []
  for j in range(len(blocks)):
    lo, hi = bounds[j], bounds[j + 1]
    if hi > lo:
      pieces.append(sum(part[..., lo:hi] for part in parts[j:]))
  total = pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, axis=-1)
  if bounds[-1] < s:
    total = jnp.pad(total, ((0, 0),) * (total.ndim - 1) + ((0, s - bounds[-1]),))
  return total


_attend.defvjp(_attend_fwd, _attend_bwd)


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None,
              num_blocks: int = NUM_BLOCKS, shared_prefix: int = 0):
  """q[B, T, H, D], k/v[B, S, K, D] → [B, T, H, D]; the same values as `xla.attention`."""
  b, t, h, d = q.shape
  s, n_kv = k.shape[1], k.shape[2]
  g = h // n_kv
  scale = d ** -0.5 if scale is None else scale
  blocks = _blocks(t, s, q_offset, num_blocks)
  masks = tuple(
      attention_mask(end - start, keys,
                     None if q_segment_ids is None else q_segment_ids[:, start:end],
                     None if kv_segment_ids is None else kv_segment_ids[:, :keys],
                     q_offset + start, shared_prefix)
      for start, end, keys in blocks)
  qh = q.reshape(b, t, n_kv, g, d).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, D]
  kh, vh = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)  # [B, K, S, D]
  out = _attend(qh, kh, vh, masks, tuple(blocks), float(scale))
  return out.transpose(0, 3, 1, 2, 4).reshape(b, t, h, d).astype(q.dtype)


registry.register(registry.Kernel(
    name="xla_blocked", fn=attention, prefix=True,
    description="the reference in query blocks with causal block skipping; hand-written backward"))
