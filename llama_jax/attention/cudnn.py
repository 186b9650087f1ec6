"""cuDNN fused flash attention (NVIDIA GPU) through `jax.nn.dot_product_attention`.

Used for unpacked causal self-attention: `implementation="cudnn", is_causal=True`, with GQA
handled natively by the kernel (query head h reads key/value head h // (H/K), as here).

Refused, with an error that names the alternative, rather than computed wrongly:
- packed batches (segment ids): cuDNN's causal mask knows nothing of documents, and passing the
  segment mask as a dense bias would cost the O(T^2) memory this kernel exists to avoid. A
  packed-layout path (per-row segment offsets) exists in JAX's private cuDNN module but could
  not be tested here, so segment ids raise instead of silently attending across documents;
  use `chunked` (any backend) or `splash` (TPU) for packed data, or train unpacked.
- decoding against a KV cache (T != S or q_offset != 0): its causal mask is aligned top-left.
- float32 inputs (cuDNN flash attention is for float16/bfloat16) and non-GPU backends.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.attention import registry


def attention(q, k, v, *, q_segment_ids=None, kv_segment_ids=None, q_offset=0, scale=None):
  """q[B, T, H, D], k/v[B, T, K, D] → [B, T, H, D], causal, no packing."""
  if jax.default_backend() != "gpu":
    raise RuntimeError(
        f"attention='cudnn' needs an NVIDIA GPU, but JAX's default backend is "
        f"{jax.default_backend()!r}; use model.attention='chunked' (any backend, O(sequence) "
        "memory), 'xla', or 'auto'")
  if q_segment_ids is not None or kv_segment_ids is not None:
    raise ValueError(
        "attention='cudnn' cannot honour segment ids (packed documents or padding): its causal "
        "mask would let tokens attend across documents. Use model.attention='chunked' for "
        "packed batches, or set data.pack=False and pass no segment ids")
  t, s = q.shape[1], k.shape[1]
  if not (isinstance(q_offset, int) and q_offset == 0) or t != s:
    raise ValueError(
        "attention='cudnn' supports self-attention over the whole sequence only (q_offset=0, "
        f"query length == key length), got q_offset={q_offset!r}, T={t}, S={s}; decode with a "
        "KV cache through model.attention='xla' or 'chunked'")
  if q.dtype not in (jnp.bfloat16, jnp.float16):
    raise ValueError(
        f"attention='cudnn' needs bfloat16 or float16 inputs, got {q.dtype}; set "
        "model.dtype='bfloat16' or use model.attention='chunked'")
  return jax.nn.dot_product_attention(q, k, v, scale=scale, is_causal=True,
                                      implementation="cudnn")


registry.register(registry.Kernel(
    name="cudnn", fn=attention, segments=False, decoding=False, backends=("gpu",),
    description="cuDNN fused flash attention (unpacked bf16/fp16 batches)"))
