"""Autoregressive generation with a preallocated KV cache (CLI: `python -m llama_jax.generate`).

`generate(model, prompts, max_new_tokens, ...)` decodes a batch of prompts of different lengths:

- Prompts are left-padded to a common length P with segment id 0, so the last real token of
  every row sits at cache slot P-1 and every new token of every row is written to the same slot.
  Positions count from 0 at each row's first real token, so a row's result does not depend on
  what it was batched with; padding never attends or is attended to (segment ids differ).
- One jitted prefill runs the whole padded prompt through the model and fills a
  `model.KVCache` sized for prompt + new tokens; only the last position is projected to the
  vocabulary. Then one jitted `lax.while_loop` decodes token by token and stops as soon as every
  row has emitted `eos_id` (or after `max_new_tokens`).
- RoPE values as arrays (`rope_inputs`, a `rope.RopeInputs`, shared or one per row) stay fixed
  for the whole generation (cached keys were rotated with them). `e2llm_window=L` serves an
  E²-LLM model: row i gets the PI scale g = ⌈n_i / L⌉, n_i = its prompt length +
  max_new_tokens - 1 (the positions it will rotate), the smallest g with g·L >= n_i.
- temperature == 0 is greedy (argmax). Otherwise logits are divided by the temperature, cut to
  the top-k tokens, then to the smallest set whose probability reaches top-p (the nucleus), and
  sampled; step i uses `fold_in(PRNGKey(seed), i)`, so a seed fixes the output.

Length-dependent RoPE methods (dynamic NTK, dynamic YaRN, LongRoPE) change their frequencies as
the sequence grows. The model caches those keys *before* rotation and re-rotates the whole
cache with the frequencies of the current length at every step — the behaviour the YaRN paper
prescribes (§3.3). HF transformers caches keys *after* rotation, so its cached decoding keeps
every key rotated with the frequencies of the length at which it was written; past the original
context length its `generate` output for these methods can differ from ours (and from its own
uncached forward). Static methods (default, linear, ntk, ntk_by_parts, yarn, llama3) cache
rotated keys and agree with HF up to float rounding.

What re-rotation does not refresh: in layers after the first, a cached key/value was computed
from a hidden state that itself went through attention with the frequencies of its own time.
So for a one-layer model cached decoding equals a fresh forward pass over the prefix at every
step, and for deeper models it does so until the frequencies change (the original length);
beyond it only a full recomputation of the prefix would match the uncached forward (tested in
`tests/inference/test_generate.py`).
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llama_jax.core.errors import ConfigError
from llama_jax.model import llama as model_lib
from llama_jax.rope import inputs as rope_inputs_lib
from llama_jax.rope.inputs import RopeInputs


class PaddedPrompts(NamedTuple):
  """A left-padded batch: every row's real tokens end at column P-1."""
  tokens: np.ndarray  # int32[B, P]; padding holds 0
  positions: np.ndarray  # int32[B, P]; 0..len-1 on real tokens, 0 on padding
  segment_ids: np.ndarray  # int32[B, P]; 1 on real tokens, 0 on padding
  lengths: np.ndarray  # int32[B]: real tokens per row


@dataclasses.dataclass(frozen=True)
class Sampler:
  """How a token is drawn from logits. Only `mode` shapes the compiled decode loop;
  temperature and top_p are passed as values, so changing them does not recompile."""
  temperature: float = 0.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if not (isinstance(self.temperature, (int, float)) and self.temperature >= 0):
      raise ValueError(f"temperature={self.temperature!r} must be a number >= 0 (0 = greedy)")
    if not (isinstance(self.top_k, (int, np.integer)) and self.top_k >= 0):
      raise ValueError(f"top_k={self.top_k!r} must be an integer >= 0 (0 = no top-k cut)")
    if not (isinstance(self.top_p, (int, float)) and 0 < self.top_p <= 1):
      raise ValueError(f"top_p={self.top_p!r} must be in (0, 1] (1 = no nucleus cut)")

  @property
  def mode(self) -> tuple[bool, int, bool]:
    """The parts that change the computation: (greedy, top_k, nucleus cut)."""
    return self.temperature == 0, int(self.top_k), self.top_p < 1.0


def pad_prompts(prompts: Sequence[Sequence[int]], pad_multiple: int = 1,
                vocab_size: int | None = None) -> PaddedPrompts:
  """Left-pads prompts to the longest one, rounded up to a multiple of `pad_multiple`.

  Rounding up lets prompts of similar lengths share one compiled prefill; the extra columns
  are padding and change no result.
  """
  if isinstance(prompts, (str, bytes)) or not len(prompts):
    raise ValueError("prompts must be a non-empty list of token-id lists")
  if not (isinstance(pad_multiple, (int, np.integer)) and pad_multiple >= 1):
    raise ValueError(f"pad_multiple={pad_multiple!r} must be an integer >= 1")
  rows = []
  for i, p in enumerate(prompts):
    row = np.asarray(p)
    if row.ndim != 1 or row.size == 0 or not np.issubdtype(row.dtype, np.integer):
      raise ValueError(f"prompt {i} must be a non-empty list of integer token ids; got {p!r:.80}")
    if vocab_size is not None and (row.min() < 0 or row.max() >= vocab_size):
      raise ValueError(f"prompt {i} has token id {int(row.min() if row.min() < 0 else row.max())}"
                       f" outside the model's vocabulary [0, {vocab_size})")
    rows.append(row.astype(np.int32))
  lengths = np.array([len(r) for r in rows], np.int32)
  p = int(lengths.max())
  p = -(-p // pad_multiple) * pad_multiple
  b = len(rows)
  tokens = np.zeros((b, p), np.int32)
  positions = np.zeros((b, p), np.int32)
  segment_ids = np.zeros((b, p), np.int32)
  for i, row in enumerate(rows):
    n = len(row)
    tokens[i, p - n:] = row
    positions[i, p - n:] = np.arange(n)
    segment_ids[i, p - n:] = 1
  return PaddedPrompts(tokens, positions, segment_ids, lengths)


# ------------------------------------------------------------------------------------ sampling
def filter_logits(logits: jax.Array, top_k: int = 0, top_p=1.0, nucleus: bool | None = None
                  ) -> jax.Array:
  """Sets to -inf every logit outside the top-k, then outside the top-p nucleus.

  The nucleus is the smallest set of most probable tokens whose total probability (after the
  top-k cut) reaches top_p: a token stays iff the probability of the tokens ranked above it is
  below top_p, so the most probable token always stays. Ties at a cut-off stay together.
  `top_k` is static; `top_p` may be traced, in which case `nucleus` (static) says whether to cut
  at all (by default: top_p < 1 — at exactly 1 rounding could otherwise drop the rarest tokens).
  """
  neg_inf = jnp.asarray(-jnp.inf, logits.dtype)
  if 0 < top_k < logits.shape[-1]:
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
    logits = jnp.where(logits < kth, neg_inf, logits)
  if nucleus is None:
    nucleus = top_p < 1.0
  if nucleus:
    ranked = -jnp.sort(-logits, axis=-1)  # descending
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    keep = mass_above < top_p
    threshold = jnp.min(jnp.where(keep, ranked, jnp.inf), axis=-1, keepdims=True)
    logits = jnp.where(logits < threshold, neg_inf, logits)
  return logits


def _sample(logits, key, mode, temperature, top_p):
  """mode = (greedy, top_k, nucleus) is static; temperature and top_p may be traced, so a sweep
  over them reuses one compilation."""
  greedy, top_k, nucleus = mode
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = filter_logits(logits.astype(jnp.float32) / temperature, top_k, top_p, nucleus)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


def sample(logits: jax.Array, key: jax.Array, sampler: Sampler) -> jax.Array:
  """float[B, V] logits → int32[B] tokens."""
  return _sample(logits, key, sampler.mode, sampler.temperature, sampler.top_p)


# ---------------------------------------------------------------------------- model steps
def _last_logits(model, hidden):
  """hidden[B, D] → float32 logits [B, V] (the model's own head, one position only)."""
  return jnp.einsum("bd,vd->bv", hidden, model.head().astype(hidden.dtype),
                    preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _prefill(graphdef, state, tokens, positions, segment_ids, max_len, rope_inputs):
  model = nnx.merge(graphdef, state)
  cache = model_lib.KVCache.init(model.cfg, tokens.shape[0], max_len)
  hidden, cache = model.features(tokens, positions, segment_ids, cache, rope_inputs,
                                 prefill=True)
  return _last_logits(model, hidden[:, -1]), cache


def step_logits(model, tokens, positions, cache, rope_inputs=None, layers=None):
  """One token per row (int[B] at int[B] positions) through the model (inside a jitted
  function): (float32 logits [B, V], updated cache). Greedy/sampled and beam decoding use it.
  `layers`: `model.layer_states()`, computed outside a decode loop (see `Llama.features`)."""
  hidden, cache = model.features(tokens[:, None], positions[:, None], None, cache, rope_inputs,
                                 layers=layers)
  return _last_logits(model, hidden[:, 0]), cache


@functools.partial(jax.jit, static_argnums=(0,), donate_argnums=(4,))
def _decode_step(graphdef, state, tokens, positions, cache, rope_inputs):
  return step_logits(nnx.merge(graphdef, state), tokens, positions, cache, rope_inputs)


@functools.partial(jax.jit, static_argnums=(0, 9, 10))
def _decode(graphdef, state, logits, cache, lengths, key, eos_id, temperature, top_p,
            max_new_tokens, mode, rope_inputs):
  """Samples from the prefill logits, then decodes until max_new_tokens or all rows ended.

  eos_id is traced (-1 = none: no token equals it), so changing it does not recompile.
  """
  model = nnx.merge(graphdef, state)
  # Sliced out of their stacks once, here: inside the loop every token would copy each layer's
  # weights and cache out of the stack again (XLA:CPU materialises the slices matmuls read).
  layers, cache = model.layer_states(), cache.per_layer()
  b = logits.shape[0]
  first = _sample(logits, jax.random.fold_in(key, 0), mode, temperature, top_p)
  out = jnp.zeros((b, max_new_tokens), jnp.int32).at[:, 0].set(first)

  def cond(carry):
    i, _, _, done, _ = carry
    return (i < max_new_tokens) & ~jnp.all(done)

  def body(carry):
    i, cache, last, done, out = carry
    # The token emitted at step i-1 sits at position length + i - 1 of its row.
    logits, cache = step_logits(model, last, lengths + i - 1, cache, rope_inputs, layers)
    new = _sample(logits, jax.random.fold_in(key, i), mode, temperature, top_p)
    new = jnp.where(done, 0, new)
    out = jax.lax.dynamic_update_slice(out, new[:, None], (0, i))
    return i + 1, cache, new, done | (new == eos_id), out

  steps, _, _, _, out = jax.lax.while_loop(
      cond, body, (jnp.int32(1), cache, first, first == eos_id, out))
  return out, steps


def prefill(model, padded: PaddedPrompts, max_len: int, rope_inputs: RopeInputs | None = None):
  """Runs the padded prompts through the model: (float32 logits [B, V] of the last position,
  a KVCache of `max_len` slots holding the prompts). `rope_inputs`: see the module doc."""
  graphdef, state = nnx.split(model)
  return _prefill(graphdef, state, jnp.asarray(padded.tokens), jnp.asarray(padded.positions),
                  jnp.asarray(padded.segment_ids), int(max_len),
                  rope_inputs_lib.as_arrays(rope_inputs))


def decode_step(model, tokens, positions, cache, rope_inputs: RopeInputs | None = None):
  """Feeds one token per row (int[B]) at `positions` (int[B]): (logits [B, V], new cache).

  The cache passed in is donated (its buffers are reused); use only the returned one.
  `rope_inputs` must be those the cache was filled with.
  """
  graphdef, state = nnx.split(model)
  return _decode_step(graphdef, state, jnp.asarray(tokens, jnp.int32),
                      jnp.asarray(positions, jnp.int32), cache,
                      rope_inputs_lib.as_arrays(rope_inputs))


def resolve_rope_inputs(model, padded: PaddedPrompts, max_new_tokens: int,
                        rope_inputs: RopeInputs | None = None, e2llm_window: int = 0
                        ) -> RopeInputs | None:
  """`rope_inputs` checked against the model and batch, with the E²-LLM scale of each row when
  `e2llm_window` is set (see the module doc). Raises ConfigError before any device work."""
  cfg = model.cfg
  rope_inputs_lib.check_window(e2llm_window, cfg.rope)
  if e2llm_window:
    if rope_inputs is not None and rope_inputs.scale is not None:
      raise ConfigError("give either e2llm_window (the scale follows the length) or a rope input "
                        "scale, not both")
    scales = rope_inputs_lib.window_scales(padded.lengths + max_new_tokens - 1, e2llm_window)
    rope_inputs = (rope_inputs or RopeInputs()).replace(scale=scales)
  rope_inputs_lib.check(rope_inputs, cfg.rope, cfg.head_dim, batch=len(padded.lengths))
  return rope_inputs


class Generation(NamedTuple):
  tokens: np.ndarray  # int32[B, steps]; after a row's EOS the entries are 0
  steps: int  # decode steps taken (< max_new_tokens when every row hit EOS early)


def generate_array(model, prompts, max_new_tokens: int, *, sampler: Sampler = Sampler(),
                   eos_id: int | None = None, seed: int = 0, max_len: int | None = None,
                   pad_multiple: int = 1, rope_inputs: RopeInputs | None = None,
                   e2llm_window: int = 0) -> Generation:
  """`generate` without the per-row cut: the raw token array and the number of steps."""
  if not (isinstance(max_new_tokens, (int, np.integer)) and max_new_tokens >= 1):
    raise ValueError(f"max_new_tokens={max_new_tokens!r} must be an integer >= 1")
  vocab = model.cfg.vocab_size
  if eos_id is not None and not 0 <= eos_id < vocab:
    raise ValueError(f"eos_id={eos_id} is outside the model's vocabulary [0, {vocab})")
  padded = pad_prompts(prompts, pad_multiple, vocab)
  rope_inputs = rope_inputs_lib.as_arrays(
      resolve_rope_inputs(model, padded, max_new_tokens, rope_inputs, e2llm_window))
  # The last sampled token is never fed back, so it needs no slot.
  needed = padded.tokens.shape[1] + max_new_tokens - 1
  if max_len is None:
    max_len = -(-needed // pad_multiple) * pad_multiple
  elif max_len < needed:
    raise ValueError(f"max_len={max_len} is too small: the longest prompt (padded to "
                     f"{padded.tokens.shape[1]}) plus max_new_tokens={max_new_tokens} needs "
                     f"{needed} cache slots")
  logits, cache = prefill(model, padded, max_len, rope_inputs)
  graphdef, state = nnx.split(model)
  out, steps = _decode(graphdef, state, logits, cache, jnp.asarray(padded.lengths),
                       jax.random.PRNGKey(seed), jnp.int32(-1 if eos_id is None else eos_id),
                       jnp.float32(sampler.temperature or 1.0), jnp.float32(sampler.top_p),
                       int(max_new_tokens), sampler.mode, rope_inputs)
  steps = int(steps)
  return Generation(np.asarray(out)[:, :steps], steps)


def generate(model, prompts: Sequence[Sequence[int]], max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
             eos_id: int | None = None, seed: int = 0, max_len: int | None = None,
             pad_multiple: int = 1, rope_inputs: RopeInputs | None = None,
             e2llm_window: int = 0) -> list[list[int]]:
  """The new tokens of each prompt, cut after the first `eos_id` (which is kept).

  Args:
    model: a `model.Llama`.
    prompts: token-id lists, any lengths (BOS included if the model expects it).
    max_new_tokens: tokens to generate per prompt (at most).
    temperature: 0 = greedy; > 0 samples from softmax(logits / temperature).
    top_k: keep only the k most probable tokens when sampling (0 = all).
    top_p: keep only the nucleus of probability top_p when sampling (1 = all).
    eos_id: a row stops after this token; decoding ends when all rows have stopped.
    seed: the sampling seed (the output is a deterministic function of it).
    max_len: KV-cache slots (default: padded prompt length + max_new_tokens - 1).
    pad_multiple: round the padded prompt length (and max_len) up to this multiple, so calls
      with similar prompt lengths reuse one compilation.
    rope_inputs: RoPE values as arrays (`rope.RopeInputs`), shared or one per prompt; new
      values reuse the compiled prefill and decode loop.
    e2llm_window: an E²-LLM model's pre-training window L; each prompt is decoded with the PI
      scale g = ceil((prompt length + max_new_tokens - 1) / L) (0 = off).
  """
  if max_new_tokens == 0:
    pad_prompts(prompts, vocab_size=model.cfg.vocab_size)  # still validate the prompts
    return [[] for _ in prompts]
  result = generate_array(model, prompts, max_new_tokens,
                          sampler=Sampler(float(temperature), top_k, float(top_p)),
                          eos_id=eos_id, seed=seed, max_len=max_len, pad_multiple=pad_multiple,
                          rope_inputs=rope_inputs, e2llm_window=e2llm_window)
  out = []
  for row in result.tokens.tolist():
    if eos_id is not None and eos_id in row:
      row = row[:row.index(eos_id) + 1]
    out.append(row)
  return out
