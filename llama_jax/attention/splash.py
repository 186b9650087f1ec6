"""Pallas splash attention (TPU): causal, segment ids honoured, GQA through the MQA kernel.

Wraps `jax.experimental.pallas.ops.tpu.splash_attention`: a block-sparse flash kernel whose
static causal mask lets it skip blocks above the diagonal and whose `SegmentIds` keep packed
documents apart. Layout: the kernel takes [heads, T, head_dim] per example, so the batch is
vmapped; with grouped-query attention each key/value head runs the MQA kernel on its H/K query
heads (K/V are never repeated).

Sequences are padded to a multiple of the block size (the kernel needs multiples of 128); the
padding gets its own segment id, so real tokens never see it and every padded row sees at
least itself (the kernel requires no all-masked row).

Off TPU it raises, unless `interpret=True` (Pallas' interpreter: slow, for tests on CPU).
Decoding against a KV cache (T != S or a non-zero `q_offset`) is not supported: use `xla` or
`chunked` for generation.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from llama_jax.attention import registry

_LANES = 128  # the kernel's blocks must be multiples of this
_PAD_SEGMENT = -1


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None,
              block_size: int = 512, interpret: bool = False):
  """q[B, T, H, D], k/v[B, T, K, D] → [B, T, H, D], causal within equal segment ids."""
  if jax.default_backend() != "tpu" and not interpret:
    raise RuntimeError(
        f"attention='splash' runs only on TPU, but JAX's default backend is "
        f"{jax.default_backend()!r}; use model.attention='chunked' (any backend, O(sequence) "
        "memory), 'xla', or 'auto'")
  b, t, h, d = q.shape
  s, n_kv = k.shape[1], k.shape[2]
  if not (isinstance(q_offset, int) and q_offset == 0) or s != t:
    raise ValueError(
        "attention='splash' supports self-attention over the whole sequence only (q_offset=0, "
        f"query length == key length), got q_offset={q_offset!r}, T={t}, S={s}; decode with a "
        "KV cache through model.attention='xla' or 'chunked'")
  if h % n_kv:
    raise ValueError(f"splash attention: {n_kv} key/value heads must divide {h} query heads")
  if (q_segment_ids is None) != (kv_segment_ids is None):
    raise ValueError("pass both q_segment_ids and kv_segment_ids, or neither")

  block = min(_round_up(block_size, _LANES), _round_up(t, _LANES))
  padded = _round_up(t, block)
  scale = d ** -0.5 if scale is None else scale
  g = h // n_kv

  # [B, K, G, T, D] queries (pre-scaled: the kernel does not scale) and [B, K, T, D] keys/values.
  qh = _pad_length(q * jnp.asarray(scale, q.dtype), padded)
  qh = qh.reshape(b, padded, n_kv, g, d).transpose(0, 2, 3, 1, 4)
  kh = _pad_length(k, padded).transpose(0, 2, 1, 3)
  vh = _pad_length(v, padded).transpose(0, 2, 1, 3)
  segs = (jnp.ones((b, t), jnp.int32) if q_segment_ids is None
          else q_segment_ids.astype(jnp.int32))
  kv_segs = segs if kv_segment_ids is None else kv_segment_ids.astype(jnp.int32)
  segs = jnp.pad(segs, ((0, 0), (0, padded - t)), constant_values=_PAD_SEGMENT)
  kv_segs = jnp.pad(kv_segs, ((0, 0), (0, padded - t)), constant_values=_PAD_SEGMENT)

  kernel = _kernel(padded, g, block, interpret)
  from jax.experimental.pallas.ops.tpu import splash_attention as sp

  def one_head_group(qg, kg, vg, qs, ks):  # [G, T, D], [T, D], [T, D], [T], [T]
    return kernel(qg, kg, vg, segment_ids=sp.SegmentIds(q=qs, kv=ks))

  per_example = jax.vmap(one_head_group, in_axes=(0, 0, 0, None, None))  # over kv heads
  out = jax.vmap(per_example)(qh, kh, vh, segs, kv_segs)  # [B, K, G, T, D]
  out = out.transpose(0, 3, 1, 2, 4).reshape(b, padded, h, d)
  return out[:, :t].astype(q.dtype)


def _round_up(x: int, multiple: int) -> int:
  return -(-x // multiple) * multiple


def _pad_length(x, size):
  return jnp.pad(x, ((0, 0), (0, size - x.shape[1])) + ((0, 0),) * (x.ndim - 2))


@functools.cache
def _kernel(length: int, heads_per_kv: int, block: int, interpret: bool):
  """The MQA splash kernel for one static shape (mask preprocessing runs once per shape)."""
  from jax.experimental.pallas.ops.tpu import splash_attention as sp
  mask = sp.MultiHeadMask([sp.CausalMask((length, length))] * heads_per_kv)
  sizes = sp.BlockSizes(block_q=block, block_kv=block, block_kv_compute=block,
                        block_q_dkv=block, block_kv_dkv=block, block_kv_dkv_compute=block,
                        block_q_dq=block, block_kv_dq=block)
  # Concrete mask metadata even when first built inside a jit trace, so the cache never
  # holds tracers.
  with jax.ensure_compile_time_eval():
    return sp.make_splash_mqa(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                              interpret=interpret)


registry.register(registry.Kernel(
    name="splash", fn=attention, decoding=False, options=("block_size",), backends=("tpu",),
    description="Pallas splash attention with segment ids (TPU)"))
