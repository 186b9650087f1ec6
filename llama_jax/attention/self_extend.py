"""Self-Extend (Jin et al. 2024, "LLM Maybe LongLM"): grouped attention past a neighbour window.

Training-free context extension. Every query scores every visible key twice:

- neighbour scores: queries and keys rotated at their own positions (plain RoPE);
- grouped scores: the query rotated at ⌊i/G⌋ + W − W/G, the key at ⌊j/G⌋ (group size G),

and keeps the neighbour score where the key is less than W (the neighbour window) tokens back,
i − j < W, the grouped one otherwise; one softmax runs over the merged row. Relative distances
d < W stay exact; beyond the window they become ⌊i/G⌋ − ⌊j/G⌋ + W − W/G ≈ W + (d − W)/G, so the
largest distance the model sees over a context N is about W + (N − W)/G — pick G so that stays
within the pre-training length (the method's README: (1/2..2/3)·L > W + (N − W)/G).

Conventions fixed here:
- W must be a multiple of G: the reference computes the shift W − W/G with float division in
  prefill and integer division when decoding; with W divisible by G the two agree and positions
  stay integers.
- The window is measured in key indices (as the reference's triangular masks do); positions give
  the rotations. Within one document of a packed or padded row the two coincide.
- The reference drops the shift while every query position is below W; that changes no result
  (such a query has no key W or more tokens back), so the shift is always applied.
- G = 1, or W at least the sequence length, is plain RoPE attention exactly.

The kernels that implement the merge declare `self_extend=True` in their registry record (`xla`,
`chunked`); they receive the grouped queries and keys as a `Grouped` record.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp


@functools.partial(jax.tree_util.register_dataclass, data_fields=["q", "k"],
                   meta_fields=["window"])
@dataclasses.dataclass(frozen=True)
class Grouped:
  """The grouped-position operands of Self-Extend attention (a pytree; `window` is static)."""
  q: jax.Array  # queries rotated at grouped positions [B, T, H, D]
  k: jax.Array  # keys rotated at grouped positions [B, S, K, D]
  window: int  # W: keys fewer than W indices back use the neighbour (plain) scores


def query_positions(positions: jax.Array, window: int, group: int) -> jax.Array:
  """Grouped query positions ⌊i/G⌋ + W − W/G (int32; W is a multiple of G)."""
  return positions.astype(jnp.int32) // group + (window - window // group)


def key_positions(positions: jax.Array, group: int) -> jax.Array:
  """Grouped key positions ⌊j/G⌋ (int32)."""
  return positions.astype(jnp.int32) // group


def neighbours(q_idx: jax.Array, kv_idx: jax.Array, window: int) -> jax.Array:
  """bool: True where the neighbour score is used, i.e. the key is fewer than W indices back.

  Shapes broadcast: q_idx[..., T, 1] and kv_idx[..., 1, S] give [..., T, S].
  """
  return (q_idx - kv_idx) < window


def check(window, group) -> None:
  """Raises ValueError unless (window, group) is a valid Self-Extend setting (both unset: off)."""
  if window is None and group is None:
    return
  if window is None or group is None:
    raise ValueError(
        f"model.self_extend_window={window!r} and model.self_extend_group={group!r}: set both "
        "(Self-Extend on) or neither (off)")
  for name, value in (("self_extend_window", window), ("self_extend_group", group)):
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
      raise ValueError(f"model.{name}={value!r} must be a positive integer")
  if window % group:
    raise ValueError(
        f"model.self_extend_window={window} must be a multiple of model.self_extend_group="
        f"{group} (the shift W - W/G must be a whole number of positions)")
