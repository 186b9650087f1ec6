"""Next-token cross-entropy computed in sequence chunks, so [B, T, vocab] logits never exist.

At YaRN lengths the logits dominate memory (64k tokens x 32k vocab x 4 bytes = 8 GiB per
sequence). The loss is a scan over chunks of the sequence; each chunk's logits are formed in
float32, reduced with a stable log-sum-exp and discarded, and `jax.checkpoint` makes the backward
pass recompute them chunk by chunk instead of saving them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def _chunk_nll(hidden, head, targets):
  """Per-token negative log-likelihood for one chunk: hidden[B, C, D] @ head[V, D]^T."""
  b, c, d = hidden.shape
  # One [B*C, D] x [D, V] matmul: the head's gradient is then a plain GEMM (model.project).
  logits = jnp.matmul(hidden.reshape(b * c, d), head.astype(hidden.dtype).T,
                      preferred_element_type=jnp.float32).reshape(b, c, -1)
  logz = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return logz - target_logit


def token_nll(hidden, head, targets, chunk_size: int = 1024):
  """float32[B, T] negative log-likelihood of `targets` under logits = hidden @ head^T."""
  b, t, d = hidden.shape
  if chunk_size <= 0 or t <= chunk_size:
    return _chunk_nll(hidden, head, targets)
  n = -(-t // chunk_size)
  pad = n * chunk_size - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  hs = hidden.reshape(b, n, chunk_size, d).swapaxes(0, 1)
  ts = targets.reshape(b, n, chunk_size).swapaxes(0, 1)
  step = jax.checkpoint(lambda h, y: _chunk_nll(h, head, y))
  _, nll = jax.lax.scan(lambda c, xs: (c, step(*xs)), None, (hs, ts))
  return nll.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]


def cross_entropy(hidden, head, targets, mask, chunk_size: int = 1024):
  """(sum of masked NLL, number of masked tokens), both float32 scalars."""
  nll = token_nll(hidden, head, targets, chunk_size)
  mask = mask.astype(jnp.float32)
  return jnp.sum(nll * mask), jnp.sum(mask)
