"""The RoPE configuration: one frozen record whose field names are HF's `rope_parameters`.

Using HF's names means an HF `config.json` maps onto this record field for field
(`RopeConfig.from_hf`). Every field except `rope_type` and `rope_theta` is optional; which
ones a method needs is declared by the method itself (see `registry.RopeMethod`).
`max_position_embeddings` is the model's maximum length: HF's `dynamic` method reads it as
its original length, and the other methods fall back to it when
`original_max_position_embeddings` is not given (HF's `standardize_rope_params` rule).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

FIELDS = (
    "rope_type", "rope_theta", "factor", "original_max_position_embeddings",
    "max_position_embeddings", "beta_fast", "beta_slow", "attention_factor", "mscale",
    "mscale_all_dim", "truncate", "low_freq_factor", "high_freq_factor", "short_factor",
    "long_factor",
)


@dataclasses.dataclass(frozen=True)
class RopeConfig:
  rope_type: str = "default"
  rope_theta: float = 10000.0
  factor: float | None = None
  original_max_position_embeddings: int | None = None
  max_position_embeddings: int | None = None
  beta_fast: float | None = None
  beta_slow: float | None = None
  attention_factor: float | None = None
  mscale: float | None = None
  mscale_all_dim: float | None = None
  truncate: bool | None = None
  low_freq_factor: float | None = None
  high_freq_factor: float | None = None
  short_factor: tuple[float, ...] | None = None
  long_factor: tuple[float, ...] | None = None

  def __post_init__(self):
    # Lists from JSON/ConfigDict become tuples so the record stays hashable (a static jit arg).
    for name in ("short_factor", "long_factor"):
      value = getattr(self, name)
      if value is not None and not isinstance(value, tuple):
        object.__setattr__(self, name, tuple(float(v) for v in value))

  def replace(self, **changes) -> RopeConfig:
    return dataclasses.replace(self, **changes)

  @property
  def original_length(self) -> int | None:
    """L, the pre-training context: `original_max_position_embeddings`, else the model maximum."""
    if self.original_max_position_embeddings is not None:
      return int(self.original_max_position_embeddings)
    return None if self.max_position_embeddings is None else int(self.max_position_embeddings)

  def to_dict(self, drop_none: bool = True) -> dict[str, Any]:
    out = {}
    for name in FIELDS:
      value = getattr(self, name)
      if value is None and drop_none:
        continue
      out[name] = list(value) if isinstance(value, tuple) else value
    return out

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> RopeConfig:
    unknown = sorted(set(d) - set(FIELDS))
    if unknown:
      raise ValueError(
          f"rope config: unknown field(s) {unknown}; allowed fields are {list(FIELDS)}")
    return cls(**dict(d))

  @classmethod
  def from_hf(cls, hf_config: Mapping[str, Any]) -> RopeConfig:
    """Reads `rope_parameters` (transformers v5) or legacy `rope_scaling` + `rope_theta`."""
    params = dict(hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {})
    if "type" in params and "rope_type" not in params:  # oldest HF spelling
      params["rope_type"] = params.pop("type")
    params.setdefault("rope_type", "default")
    params.setdefault("rope_theta", hf_config.get("rope_theta", 10000.0))
    if params.get("original_max_position_embeddings") is None and hf_config.get(
        "original_max_position_embeddings") is not None:
      params["original_max_position_embeddings"] = hf_config["original_max_position_embeddings"]
    params["max_position_embeddings"] = hf_config.get("max_position_embeddings")
    params.pop("partial_rotary_factor", None)
    known = {k: v for k, v in params.items() if k in FIELDS}
    unknown = sorted(set(params) - set(FIELDS))
    if unknown:
      raise ValueError(
          f"HF rope parameters {unknown} are not supported by llama_jax; supported: {list(FIELDS)}")
    return cls(**known)

  def to_hf(self) -> dict[str, Any]:
    """The `rope_parameters` dict for an HF config.json (without max_position_embeddings)."""
    d = self.to_dict()
    d.pop("max_position_embeddings", None)
    return d


def read_json(text_or_path: str) -> dict[str, Any]:
  """RoPE fields from a JSON file (e.g. a search's rope.json: HF `rope_parameters`) or a JSON
  string, checked against FIELDS."""
  is_file = Path(text_or_path).is_file()
  text = Path(text_or_path).read_text(encoding="utf-8") if is_file else text_or_path
  try:
    data = json.loads(text)
  except json.JSONDecodeError as e:
    where = f"file {text_or_path}" if is_file else f"{text_or_path!r} (not a file)"
    raise ValueError(f"--rope_json: {where} is not valid JSON: {e}") from None
  if not isinstance(data, dict):
    raise ValueError(f"--rope_json must hold a JSON object of RoPE fields, got {type(data)}")
  unknown = sorted(set(data) - set(FIELDS))
  if unknown:
    raise ValueError(f"--rope_json has unknown RoPE field(s) {unknown}; allowed: {list(FIELDS)}")
  return data


def apply_overrides(base: RopeConfig, changes: Mapping[str, Any]) -> RopeConfig:
  """`base` with `changes` applied; a new rope_type starts from that type's defaults (keeping
  rope_theta and max_position_embeddings), otherwise the given fields replace base's."""
  unknown = sorted(set(changes) - set(FIELDS))
  if unknown:
    raise ValueError(f"unknown RoPE field(s) {unknown}; allowed: {sorted(FIELDS)}")
  if not changes:
    return base
  if changes.get("rope_type", base.rope_type) != base.rope_type:
    base = RopeConfig(rope_type=changes["rope_type"], rope_theta=base.rope_theta,
                      max_position_embeddings=base.max_position_embeddings)
  return base.replace(**changes)


# Methods that rescale with the current length by design: no length is "past" what they cover.
_LENGTH_ADAPTIVE = ("dynamic", "dynamic_yarn")


def covered_length(rope: RopeConfig) -> int | None:
  """The longest sequence `rope` was made for, or None when it has no such bound.

  Without scaling (`default`) that is `max_position_embeddings`, the length the model was
  trained at. A static scaling method stretches the original length L by `factor`, so it
  covers max(max_position_embeddings, factor x L) — the same number for a fine-tuned YaRN
  model, the stretched one for scaling applied at inference. Dynamic methods (dynamic NTK,
  dynamic YaRN) rescale with the current length and have no bound.
  """
  if rope.rope_type in _LENGTH_ADAPTIVE:
    return None
  limit = rope.max_position_embeddings
  if rope.rope_type != "default" and rope.factor and rope.original_length:
    limit = max(limit or 0, int(rope.factor * rope.original_length))
  return None if limit is None else int(limit)


def past_context_warning(rope: RopeConfig, lengths, what: str) -> str | None:
  """A one-line warning when any of `lengths` (tokens) goes past `covered_length(rope)`, naming
  them and what to do; None when all fit. `what` names the lengths, e.g. 'perplexity window'."""
  limit = covered_length(rope)
  over = sorted({int(n) for n in lengths if limit is not None and n > limit})
  if not over:
    return None
  if rope.rope_type == "default":
    return (f"{what} length(s) {over} go past the model's max_position_embeddings={limit}, "
            "with no RoPE scaling: positions beyond it were never trained, so expect "
            "degraded output there. Scale RoPE (e.g. rope_type=yarn, factor="
            f"{-(-max(over) // limit)}, original_max_position_embeddings={limit}) or stay "
            f"within {limit} tokens")
  return (f"{what} length(s) {over} go past the {limit} tokens that rope_type="
          f"{rope.rope_type} (factor {rope.factor}, original length {rope.original_length}) "
          "covers: positions beyond it are extrapolated, so expect degraded output there")
