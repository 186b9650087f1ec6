"""E²-LLM (Liu, Bai et al. 2024, arXiv 2401.06951, Eq. 5-7 and Alg. 1): scale and offset draws.

Training at length R inside a pre-training window L, every iteration draws a PI scale
g ~ U{1, ..., g_max} and an offset t ~ U{0, ..., max(0, g·L - R)}; token m is rotated at
((m + t_m) / g)·θ_i with t_m = 0 for the first `n_sink` tokens (attention sinks) and t_m = t
for the rest. So the positions are [0, ..., n_sink-1, n_sink+t, ..., R-1+t] / g: the gap after
the sinks covers the whole interpolated window g·L and every scaled position stays below L.
With g = 1 and t = 0 it is plain training.

How it is applied here:
- The offset goes into the batch's integer positions; g becomes a per-example PI scale
  (`rope.RopeInputs(scale=g)`, angles m·θ·(1/g)), so the model compiles once for all draws.
  It composes with the config's own RoPE method (for Llama 2, plain RoPE: exactly the paper).
- `per="step"` (the default: Eq. 6-7 and Alg. 1) draws one (g, t) per iteration, shared by the
  whole global batch (and all its micro-batches); `per="example"` draws one per row, the
  reading of the paper's Fig. 2 text.
- Packed rows: positions restart at 0 in every document, so each document keeps its own first
  `n_sink` tokens unshifted and shifts the rest by the row's t. Documents attend only within
  themselves, so those are their sinks. t is bounded with R = the row length, the longest a
  document can be, so every document stays inside the window (a short document then never
  reaches the window's far end: it is the row that is sampled, as in the paper's one draw per
  iteration).
- Inference uses t = 0 and g = L_eval / L: `rope.inputs.scale_for_length` (the `e2llm_window`
  option of the perplexity and passkey evaluations and of `generate`).

Logged per step: `augment_e2llm_g` and `augment_e2llm_t` (means over the rows).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from llama_jax.core.errors import ConfigError
from llama_jax.rope.inputs import MAX_EXACT_POSITION, RopeInputs
from llama_jax.training.augment import registry

PER = ("step", "example")


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def draw(rng: jax.Array, rows: int, g_max: int, window: int, seq_len: int, per: str):
  """(g, t), int32 [rows] each: g ~ U{1..g_max}, t ~ U{0..max(0, g·window - seq_len)}."""
  shape = (1,) if per == "step" else (rows,)
  key_g, key_t = jax.random.split(rng)
  g = jax.random.randint(key_g, shape, 1, g_max + 1, dtype=jnp.int32)
  t_max = jnp.maximum(0, g * window - seq_len)
  t = jax.random.randint(key_t, shape, 0, t_max + 1, dtype=jnp.int32)
  return jnp.broadcast_to(g, (rows,)), jnp.broadcast_to(t, (rows,))


def shift(positions: jax.Array, t: jax.Array, n_sink: int) -> jax.Array:
  """Positions [rows, T] with t[row] added to every position >= n_sink (per document)."""
  return jnp.where(positions >= n_sink, positions + t[:, None], positions)


def check(options, model, seq_len: int) -> dict:
  """The options with `window` resolved; ConfigError naming the option for a bad value."""
  o = dict(options)
  if not _is_int(o["g_max"]) or o["g_max"] < 1:
    raise ConfigError(f"augment.e2llm.g_max={o['g_max']!r}; allowed: an integer >= 1 (the "
                      "largest PI scale drawn; the paper uses 20)")
  if not _is_int(o["window"]) or o["window"] < 0:
    raise ConfigError(f"augment.e2llm.window={o['window']!r}; allowed: an integer >= 1, the "
                      "pre-training window L (0 = the model's original length)")
  window = o["window"] or model.rope.original_length
  if window > model.max_position_embeddings:
    raise ConfigError(
        f"augment.e2llm.window={window}: positions scaled into the window reach {window - 1}, "
        f"past what the model can represent (model.max_position_embeddings="
        f"{model.max_position_embeddings}); allowed: a window <= {model.max_position_embeddings}")
  if o["g_max"] * window > MAX_EXACT_POSITION:
    raise ConfigError(
        f"augment.e2llm.g_max={o['g_max']} with window={window} reaches position "
        f"{o['g_max'] * window - 1}, past what float32 angles represent exactly (2^24); "
        f"allowed: g_max <= {MAX_EXACT_POSITION // window}")
  if not _is_int(o["n_sink"]) or not 0 <= o["n_sink"] < seq_len:
    raise ConfigError(f"augment.e2llm.n_sink={o['n_sink']!r}; allowed: an integer in "
                      f"[0, seq_len={seq_len}) (the paper keeps 4 sink tokens)")
  if o["per"] not in PER:
    raise ConfigError(f"augment.e2llm.per={o['per']!r}; allowed: {list(PER)} (one draw per "
                      "training step, or one per example)")
  o["window"] = window
  return o


def build(options, model, seq_len: int):
  o = check(options, model, seq_len)

  def transform(batch, rng, step):
    del step  # the randomness is already a function of (seed, step)
    rows = batch["tokens"].shape[0]
    g, t = draw(rng, rows, o["g_max"], o["window"], seq_len, o["per"])
    return {**batch, "positions": shift(batch["positions"], t, o["n_sink"]),
            registry.ROPE_KEY: RopeInputs(scale=g.astype(jnp.float32)),
            registry.METRICS_KEY: {"e2llm_g": jnp.mean(g.astype(jnp.float32)),
                                   "e2llm_t": jnp.mean(t.astype(jnp.float32))}}

  return transform


registry.register(registry.Augmentation(
    name="e2llm", options={"g_max": 20, "window": 0, "n_sink": 4, "per": "step"}, build=build,
    description="E²-LLM: PI scale g ~ U{1..g_max} and offset t ~ U{0..g·L-R} after n_sink "
                "tokens"))
