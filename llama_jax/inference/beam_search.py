"""Beam search with the KV cache: HF transformers' `generate(num_beams=K, do_sample=False)`.

`beam_search(model, prompts, max_new_tokens, num_beams=4, eos_id=..., convention=...)` returns
the best hypothesis of each prompt. Prompts are left-padded and prefilled once (as in
`generate.py`); the cache is then repeated K times, row b*K + k holding beam k of prompt b, and
one jitted `lax.while_loop` decodes all beams of all prompts together. Each step:

1. scores = log_softmax(logits) + the beam's running sum, over K x V continuations per prompt
   (at the first step only beam 0 is live: the others start at -1e9, as in HF);
2. the top 2K continuations (HF keeps (1 + number of EOS ids) x K; with one EOS id, 2K);
3. the continuations that end a hypothesis, among the top K by rank, join the prompt's finished
   set, which keeps the best K by length-normalised score sum / length**length_penalty;
4. the next K running beams are picked from the rest; the cache rows are gathered to follow
   them, and their new tokens are fed (position = prompt length + step);
5. a prompt is done when K hypotheses are finished and none of the running beams can beat the
   worst of them by HF's heuristic; the loop ends when every prompt is done or after
   max_new_tokens tokens.

Two conventions, which differ in what "length" and "done" mean (both use HF's defaults,
length_penalty 1.0 and early_stopping False):

- "legacy" — transformers' `BeamSearchScorer` up to 4.3x, which LLM-Adapters' evaluation scripts
  ran (their requirements install transformers from git, spring 2023). A hypothesis ended by EOS
  is the sequence before the EOS, of length prompt + generated tokens (the EOS not counted); its
  score is the running sum including the EOS's log-probability. A prompt is done when its K-th
  best score >= (best of the 2K candidates) / (prompt + generated + 1)**length_penalty. When the
  token budget runs out, the K running beams (the first K candidates that are not EOS, in rank
  order) join the finished set with length prompt + max_new_tokens.
- "current" — transformers 5's vectorised `_beam_search`. A hypothesis's length counts only the
  generated tokens, EOS included; reaching the token budget ends every top-K candidate of the
  last step. A prompt is done when its K-th best score >= (best running beam) / generated
  ** length_penalty.

The prompt length in the legacy convention is each prompt's own (its padding excluded), which is
what HF computes for a batch of one; a left-padded batch in HF counts the padding too, so its
results there depend on the batch — ours do not. The returned tokens are the new tokens of the
best hypothesis, ending with EOS when it ended with EOS (HF appends the EOS it had dropped).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llama_jax.inference import generate as generate_lib

CONVENTIONS = ("legacy", "current")
_NEG = -1e9  # HF's score for the not-yet-live beams and the stopped candidates


class BeamResult(NamedTuple):
  tokens: list[list[int]]  # per prompt: the best hypothesis's new tokens (EOS kept)
  scores: list[float]  # its length-normalised score (HF's `sequences_scores`)


class _State(NamedTuple):
  run_tokens: jax.Array  # int32[B, K, N] new tokens of the running beams
  run_scores: jax.Array  # f32[B, K] their summed log-probabilities
  fin_tokens: jax.Array  # int32[B, K, N] finished hypotheses
  fin_scores: jax.Array  # f32[B, K] their normalised scores, -inf = empty slot; sorted
  fin_len: jax.Array  # int32[B, K] their new-token counts (EOS included)
  done: jax.Array  # bool[B]


def _rows(cache, fn):
  """`fn(array, batch_axis)` applied to every array of the cache (stacked or per layer)."""
  kv_axis = 0 if isinstance(cache.k, tuple) else 1
  kv = lambda a: jax.tree.map(lambda x: fn(x, kv_axis), a)
  return cache.replace(k=kv(cache.k), v=kv(cache.v), segment_ids=fn(cache.segment_ids, 0),
                       positions=fn(cache.positions, 0))


def _reorder(cache, rows):
  """The cache rows `rows` (beam b*K + k follows the row it extends)."""
  return _rows(cache, lambda a, axis: jnp.take(a, rows, axis=axis))


def _repeat(cache, k: int):
  return _rows(cache, lambda a, axis: jnp.repeat(a, k, axis=axis))


def _take(x, idx):
  """x[b, idx[b, j], ...] for every b, j."""
  idx = idx.reshape(idx.shape + (1,) * (x.ndim - 2))
  return jnp.take_along_axis(x, idx, axis=1)


def _merge_finished(s: _State, scores, tokens, lengths, k: int):
  """The best k of the finished set and new candidates (-inf = not a candidate); on equal
  scores the earlier entries win, as HF only replaces a finished one by a strictly better."""
  m_scores = jnp.concatenate([s.fin_scores, scores], axis=1)
  top = jax.lax.top_k(m_scores, k)[1]
  return (_take(m_scores, top), _take(jnp.concatenate([s.fin_tokens, tokens], axis=1), top),
          _take(jnp.concatenate([s.fin_len, lengths], axis=1), top))


def _select(i, logits, s: _State, prompt_len, eos_id, length_penalty, k: int, n: int,
            convention: str):
  """Step i (the i-th new token): extend, finish, pick the next running beams."""
  b, v = s.run_scores.shape[0], logits.shape[-1]
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(b, k, v)
  logp = logp + s.run_scores[:, :, None]
  vals, idx = jax.lax.top_k(logp.reshape(b, k * v), 2 * k)
  beam, tok = idx // v, (idx % v).astype(jnp.int32)
  cand = _take(s.run_tokens, beam).at[:, :, i].set(tok)  # [B, 2K, N]
  is_eos = tok == eos_id
  top_rank = (jnp.arange(2 * k) < k)[None, :]
  open_ = ~s.done[:, None]
  generated = (i + 1).astype(jnp.float32)
  if convention == "current":
    hit = is_eos | (i + 1 >= n)
    run_key = vals + jnp.where(hit, _NEG, 0.0)
    order = jax.lax.top_k(run_key, k)[1]
    run_scores = _take(run_key, order)
    new = jnp.where(hit & top_rank & open_, vals / generated ** length_penalty, -jnp.inf)
  else:
    before = prompt_len[:, None] + i.astype(jnp.float32)  # the sequence before the new token
    new = jnp.where(is_eos & top_rank & open_, vals / before ** length_penalty, -jnp.inf)
    # The running beams: the first K candidates that are not EOS, in rank order.
    rank_key = jnp.where(is_eos, 2 * k, 0) + jnp.arange(2 * k)[None, :]
    order = jax.lax.top_k(-rank_key, k)[1]
    run_scores = _take(vals, order)
  lengths = jnp.full(new.shape, i + 1, jnp.int32)
  fin_scores, fin_tokens, fin_len = _merge_finished(s, new, cand, lengths, k)
  if convention == "current":
    best = run_scores[:, 0] / generated ** length_penalty
  else:
    best = vals[:, 0] / (prompt_len + generated) ** length_penalty
  full = jnp.all(jnp.isfinite(fin_scores), axis=1)
  done = s.done | (full & (fin_scores[:, -1] >= best))
  state = _State(_take(cand, order), run_scores, fin_tokens, fin_scores, fin_len, done)
  rows = (jnp.arange(b)[:, None] * k + _take(beam, order)).reshape(-1)
  return state, _take(tok, order).reshape(-1), rows


@functools.partial(jax.jit, static_argnums=(0, 7, 8, 9))
def _search(graphdef, state, logits, cache, lengths, eos_id, length_penalty, k, n, convention):
  model = nnx.merge(graphdef, state)
  b = logits.shape[0]
  # Per-layer weights and cache, sliced out of their stacks once (see generate._decode).
  layers, cache = model.layer_states(), _repeat(cache, k).per_layer()
  row_lengths = jnp.repeat(lengths, k)
  prompt_len = lengths.astype(jnp.float32)
  start = jnp.where(jnp.arange(k) == 0, 0.0, _NEG).astype(jnp.float32)
  s = _State(jnp.zeros((b, k, n), jnp.int32), jnp.broadcast_to(start, (b, k)),
             jnp.zeros((b, k, n), jnp.int32), jnp.full((b, k), -jnp.inf, jnp.float32),
             jnp.zeros((b, k), jnp.int32), jnp.zeros((b,), bool))
  select = functools.partial(_select, prompt_len=prompt_len, eos_id=eos_id,
                             length_penalty=length_penalty, k=k, n=n, convention=convention)
  s, feed, rows = select(jnp.int32(0), jnp.repeat(logits, k, axis=0), s)

  def cond(carry):
    i, _, _, _, s = carry
    return (i < n) & ~jnp.all(s.done)

  def body(carry):
    i, cache, feed, rows, s = carry
    cache = _reorder(cache, rows)
    # The token chosen at step i-1 sits at position prompt length + i - 1 of its row.
    logits, cache = generate_lib.step_logits(model, feed, row_lengths + i - 1, cache,
                                             layers=layers)
    s, feed, rows = select(i, logits, s)
    return i + 1, cache, feed, rows, s

  steps, _, _, _, s = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, feed, rows, s))
  if convention == "legacy":
    # Out of tokens: the running beams of the prompts not done join their finished sets.
    scores = s.run_scores / (prompt_len[:, None] + steps.astype(jnp.float32)) ** length_penalty
    scores = jnp.where(s.done[:, None], -jnp.inf, scores)
    fin_scores, fin_tokens, fin_len = _merge_finished(
        s, scores, s.run_tokens, jnp.full(scores.shape, steps, jnp.int32), k)
    s = s._replace(fin_scores=fin_scores, fin_tokens=fin_tokens, fin_len=fin_len)
  return s.fin_tokens[:, 0], s.fin_len[:, 0], s.fin_scores[:, 0]


def beam_search(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
                num_beams: int = 4, eos_id: int | None = None, length_penalty: float = 1.0,
                convention: str = "legacy", pad_multiple: int = 1) -> BeamResult:
  """The best beam-search hypothesis of each prompt (see the module docstring).

  Args:
    model: a `model.Llama`.
    prompts: token-id lists (BOS included if the model expects it), any lengths.
    max_new_tokens: the token budget per prompt.
    num_beams: beams per prompt (K >= 1; K = 1 is greedy decoding).
    eos_id: the token that ends a hypothesis (None: every hypothesis runs to the budget).
    length_penalty: the exponent of the length that divides a finished hypothesis's score.
    convention: "legacy" (transformers <= 4.3x, LLM-Adapters' runs) or "current"
      (transformers 5).
    pad_multiple: round the padded prompt length up to this multiple (shared compilations).
  """
  if convention not in CONVENTIONS:
    raise ValueError(f"beam search convention={convention!r}; allowed: {list(CONVENTIONS)}")
  if not (isinstance(num_beams, (int, np.integer)) and num_beams >= 1):
    raise ValueError(f"num_beams={num_beams!r} must be an integer >= 1")
  if not (isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 1):
    raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
  vocab = model.cfg.vocab_size
  if 2 * num_beams > vocab:
    raise ValueError(f"num_beams={num_beams} needs a vocabulary of at least {2 * num_beams}")
  if eos_id is not None and not 0 <= eos_id < vocab:
    raise ValueError(f"eos_id={eos_id} is outside the model's vocabulary [0, {vocab})")
  padded = generate_lib.pad_prompts(prompts, pad_multiple, vocab)
  max_len = padded.tokens.shape[1] + max_new_tokens - 1  # the last token is never fed back
  logits, cache = generate_lib.prefill(model, padded, max_len)
  graphdef, state = nnx.split(model)
  tokens, lengths, scores = _search(
      graphdef, state, logits, cache, jnp.asarray(padded.lengths),
      jnp.int32(-1 if eos_id is None else eos_id), jnp.float32(length_penalty),
      int(num_beams), int(max_new_tokens), convention)
  tokens, lengths = np.asarray(tokens), np.asarray(lengths)
  return BeamResult([row[:n].tolist() for row, n in zip(tokens, lengths)],
                    [float(x) for x in np.asarray(scores)])
