"""Next-token cross-entropy computed in sequence chunks, so [B, T, vocab] logits never exist.

At YaRN lengths the logits dominate memory (64k tokens x 32k vocab x 4 bytes = 8 GiB per
sequence). The loss is a scan over chunks of the sequence; each chunk's logits are formed in
float32, reduced with a stable log-sum-exp and discarded, and `jax.checkpoint` makes the backward
pass recompute them chunk by chunk instead of saving them.

Optionally the vocabulary is split too (`vocab_chunk`): each chunk's logits are reduced to a
log-sum-exp and the chunks' values combined, the exact log-partition function in pieces. This
is for XLA:CPU's Eigen GEMMs (the train step's choice on CPU, `core/compilation.py`), which run a
[tokens, d_model] x [d_model, vocab] product at half speed once the output is wider than ~2k
columns (measured: 77 vs 145 GFLOP/s at 4096 x 512 x 8192), while 1024-column pieces run at full
speed.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

# The arrays of a training batch, each [batch, length]: inputs, next-token targets, document ids
# (0 = padding), positions within each document, and which targets count (1.0) or not (0.0).
BATCH_KEYS = ("tokens", "targets", "segment_ids", "positions", "loss_mask")
# Optional: per-example RoPE values (a `rope.RopeInputs`, e.g. an augmentation's PI scale).
ROPE_KEY = "rope"
LOSS_CHUNK = 1024  # sequence positions per cross-entropy chunk


def _chunk_nll(hidden, head, targets, vocab_chunk: int = 0):
  """Per-token negative log-likelihood for one chunk: hidden[B, C, D] @ head[V, D]^T.

  The logits are formed `vocab_chunk` columns at a time (0: all at once); each piece gives its
  log-sum-exp and, for the rows whose target falls in it, the target's logit.
  """
  b, c, d = hidden.shape
  v = head.shape[0]
  piece = vocab_chunk if 0 < vocab_chunk < v else v
  # [B*C, D] x [D, V] matmuls: the head's gradient is then a plain GEMM (model.project).
  rows, flat_targets = hidden.reshape(b * c, d), targets.reshape(-1)
  part_logz, target_logit = [], jnp.zeros(flat_targets.shape, jnp.float32)
  for start in range(0, v, piece):
    logits = jnp.matmul(rows, head[start:start + piece].astype(hidden.dtype).T,
                        preferred_element_type=jnp.float32)
    part_logz.append(jax.nn.logsumexp(logits, axis=-1))
    local = flat_targets - start
    inside = (local >= 0) & (local < logits.shape[1])
    picked = jnp.take_along_axis(logits, jnp.clip(local, 0, logits.shape[1] - 1)[:, None],
                                 axis=-1)[:, 0]
    target_logit = target_logit + jnp.where(inside, picked, 0.0)
  logz = part_logz[0] if len(part_logz) == 1 else jax.nn.logsumexp(jnp.stack(part_logz), axis=0)
  return (logz - target_logit).reshape(b, c)


def token_nll(hidden, head, targets, chunk_size: int = 1024, vocab_chunk: int = 0):
  """float32[B, T] negative log-likelihood of `targets` under logits = hidden @ head^T.

  chunk_size: sequence positions per chunk (0: one chunk); vocab_chunk: vocabulary entries per
  logits matmul (0: the whole vocabulary at once).
  """
  b, t, d = hidden.shape
  if chunk_size <= 0 or t <= chunk_size:
    return _chunk_nll(hidden, head, targets, vocab_chunk)
  n = -(-t // chunk_size)
  pad = n * chunk_size - t
  if pad:
    hidden = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0)))
    targets = jnp.pad(targets, ((0, 0), (0, pad)))
  hs = hidden.reshape(b, n, chunk_size, d).swapaxes(0, 1)
  ts = targets.reshape(b, n, chunk_size).swapaxes(0, 1)
  step = jax.checkpoint(lambda h, y: _chunk_nll(h, head, y, vocab_chunk))
  _, nll = jax.lax.scan(lambda c, xs: (c, step(*xs)), None, (hs, ts))
  return nll.swapaxes(0, 1).reshape(b, n * chunk_size)[:, :t]


def cross_entropy(hidden, head, targets, mask, chunk_size: int = 1024, vocab_chunk: int = 0):
  """(sum of masked NLL, number of masked tokens), both float32 scalars."""
  nll = token_nll(hidden, head, targets, chunk_size, vocab_chunk)
  mask = mask.astype(jnp.float32)
  return jnp.sum(nll * mask), jnp.sum(mask)


def batch_loss_sums(model, batch: dict, chunk_size: int = LOSS_CHUNK, vocab_chunk: int = 0,
                    rng=None):
  """(summed masked NLL, masked token count), float32 scalars, of `model` on one batch.

  `rng`: key for the model's stochastic parts (adapter dropout); None evaluates without them.
  """
  hidden, _ = model.features(batch["tokens"], batch["positions"], batch["segment_ids"],
                             rope_inputs=batch.get(ROPE_KEY), rng=rng)
  return cross_entropy(hidden, model.head(), batch["targets"], batch["loss_mask"], chunk_size,
                       vocab_chunk)
