"""Traced RoPE inputs: the values that vary per example or per evaluation, passed as arrays.

The config (`RopeConfig`) is static: the method, head_dim and lengths shape the compiled
program. A `RopeInputs` carries what may change from one call to the next without recompiling,
each field either shared (a scalar, or one [head_dim/2] vector) or one value per example
(leading batch axis):

- `scale` g, float: Position Interpolation on top of any method, angles (m / g)·θ_i, computed
  as m·(θ_i·(1/g)) like the `linear` method (so plain RoPE with scale g is `linear` with
  factor g, bit for bit). E²-LLM draws it per training step; at inference it is
  `scale_for_length(length, window)`.
- `offset` t, int: added to every position before the angles (and to the length that
  length-dependent methods see).
- the method's own traced fields (`registry.RopeMethod.traced`): `factor` of linear,
  ntk_by_parts, llama3, dynamic and dynamic_yarn; `attention_factor` of yarn and longrope; the
  per-pair factor vectors λ of longrope (`long_factor`, `short_factor`). They replace the
  config's values; the method's code is the same for both (`registry.resolve_values`).

The batch of a train step carries one under the key "rope" (an augmentation puts it there);
`Llama.__call__/features`, perplexity scoring and generation take one as `rope_inputs`.
`check` validates one against a config before any device work.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from llama_jax.core.errors import ConfigError
from llama_jax.rope import registry
from llama_jax.rope.config import RopeConfig

GENERIC = ("scale", "offset")  # taken by every method

# Positions are exact in float32 below 2^24; beyond it two positions can share one angle.
MAX_EXACT_POSITION = 2**24


@flax.struct.dataclass
class RopeInputs:
  scale: jax.Array | None = None  # float [] or [B]: PI scale g, angles m·θ/g
  offset: jax.Array | None = None  # int [] or [B]: added to every position
  factor: jax.Array | None = None  # float [] or [B]: the method's `factor`
  attention_factor: jax.Array | None = None  # float [] or [B]: multiplies cos and sin
  short_factor: jax.Array | None = None  # float [d/2] or [B, d/2]: longrope's λ (short)
  long_factor: jax.Array | None = None  # float [d/2] or [B, d/2]: longrope's λ (long)

  def given(self) -> dict[str, jax.Array]:
    """The fields that are set."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
            if getattr(self, f.name) is not None}


FIELDS = tuple(f.name for f in dataclasses.fields(RopeInputs))


def as_arrays(inputs: RopeInputs | None) -> RopeInputs | None:
  """The given fields as jax arrays of fixed dtypes (int32 offset, float32 otherwise), so
  Python numbers and NumPy values of any precision reuse one compilation."""
  if inputs is None:
    return None
  return inputs.replace(**{
      name: jnp.asarray(value, jnp.int32 if name == "offset" else jnp.float32)
      for name, value in inputs.given().items()})


def _concrete(value) -> np.ndarray | None:
  """The value as NumPy, or None inside a traced function (only shapes can be checked)."""
  try:
    return np.asarray(value)
  except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
    return None


def check(inputs: RopeInputs | None, rope: RopeConfig, head_dim: int,
          batch: int | None = None, where: str = "rope input") -> None:
  """Raises ConfigError unless `inputs` fits the method, head_dim and batch size.

  Each field must be one the method traces (or `scale`/`offset`), shared or per example
  ([batch] / [batch, head_dim/2] when `batch` is given), and — when its values are known,
  i.e. outside a traced function — positive (offset: a non-negative integer).
  """
  if inputs is None:
    return
  method = registry.get(rope.rope_type)
  allowed = GENERIC + method.traced
  half = head_dim // 2
  for name, value in inputs.given().items():
    if name not in allowed:
      raise ConfigError(
          f"{where} {name!r} is not traced by rope_type={rope.rope_type!r}; it traces "
          f"{list(allowed)} (every method takes {list(GENERIC)})")
    shape = tuple(np.shape(value))
    per = "(batch,)" if batch is None else f"({batch},)"
    if name in registry.VECTOR_FIELDS:
      if not shape or shape[-1] != half or len(shape) > 2:
        raise ConfigError(
            f"{where} {name} has shape {shape} ({shape[-1] if shape else 0} entries); "
            f"rope_type={rope.rope_type!r} with head_dim={head_dim} needs head_dim/2 = {half} "
            f"entries: shape ({half},) or {per[:-1]} {half})")
      lead = shape[:-1]
    else:
      if len(shape) > 1:
        raise ConfigError(f"{where} {name} has shape {shape}; allowed: () (shared) or {per} "
                          "(one per example)")
      lead = shape
    if lead and batch is not None and lead != (batch,):
      raise ConfigError(f"{where} {name} has {lead[0]} rows for a batch of {batch}; give one "
                        f"per example ({batch}) or one shared value")
    array = _concrete(value)
    if array is None:
      continue
    if name == "offset":
      if not np.issubdtype(array.dtype, np.integer) or np.any(array < 0):
        raise ConfigError(f"{where} offset={array.tolist()!r}; allowed: integers >= 0")
    elif not (np.all(np.isfinite(array)) and np.all(array > 0)):
      raise ConfigError(f"{where} {name} has a value <= 0 or not finite "
                        f"({np.min(array)!r}); allowed: finite values > 0")


def scale_for_length(length: int, window: int) -> int:
  """E²-LLM inference: the smallest integer g with g·window >= length (at least 1)."""
  return max(1, math.ceil(length / window))


def check_window(window: int, rope: RopeConfig, where: str = "e2llm_window") -> None:
  """A window whose scaled positions (up to window - 1) the model's config can represent."""
  if not (isinstance(window, (int, np.integer)) and not isinstance(window, bool) and window >= 0):
    raise ConfigError(f"{where}={window!r}; allowed: an integer >= 0 (0 = off)")
  limit = rope.max_position_embeddings
  if limit is not None and window > limit:
    raise ConfigError(
        f"{where}={window} exceeds the model's max_position_embeddings={limit}: positions "
        f"scaled into the window reach {window - 1}, past what the model can represent; use "
        f"the pre-training window (at most {limit})")


def window_scales(lengths: Sequence[int], window: int) -> np.ndarray:
  """float32 [len(lengths)]: `scale_for_length` of each length."""
  return np.asarray([scale_for_length(int(n), window) for n in lengths], np.float32)
