"""The device mesh: four named axes ("data", "fsdp", "tensor", "sequence") from `config.mesh`.

- `validate_mesh` checks a `config.mesh` against the device count and the model/batch sizes
  before any device work, so a bad layout fails with the field, the value and what is allowed.
- `make_mesh` builds the mesh with explicit `AxisType.Auto` axes (sharding propagates through
  `jit`; the model adds constraints at block boundaries).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh

from llama_jax.parallel.logical_axes import DEFAULT_RULES, Rules

AXES = ("data", "fsdp", "tensor", "sequence")

# Which model/batch size each logical dimension name stands for, used by `validate_mesh`.
_LOGICAL_SIZES = (
    ("heads", "model.n_heads"), ("act_heads", "model.n_heads"),
    ("kv_heads", "model.n_kv_heads"), ("act_kv_heads", "model.n_kv_heads"),
    ("mlp", "model.ffn_dim"), ("act_mlp", "model.ffn_dim"),
    ("vocab", "model.vocab_size"), ("act_vocab", "model.vocab_size"),
    ("embed", "model.d_model"), ("act_embed", "model.d_model"),
    ("head_dim", "model.head_dim"), ("layers", "model.n_layers"), ("norm", "model.d_model"),
    ("batch", "batch_size"), ("act_batch", "batch_size"),
    ("length", "seq_len"), ("act_length", "seq_len"),
)


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def resolve_mesh_shape(mesh_cfg: Mapping[str, Any], n_devices: int) -> dict[str, int]:
  """{axis: size} for the four mesh axes, with the one allowed -1 filled in.

  Raises ValueError naming the field when a size is not an integer >= 1 (or -1), when more
  than one axis is -1, or when the product does not equal `n_devices`.
  """
  given = dict(mesh_cfg.items()) if hasattr(mesh_cfg, "items") else dict(mesh_cfg)
  unknown = sorted(set(given) - set(AXES))
  if unknown:
    raise ValueError(f"mesh has unknown axes {unknown}; allowed axes: {list(AXES)}")
  sizes = {}
  for axis in AXES:
    value = given.get(axis, 1)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or \
        (value < 1 and value != -1):
      raise ValueError(f"mesh.{axis}={value!r}; allowed: an integer >= 1, or -1 for "
                       "'all remaining devices' (on one axis only)")
    sizes[axis] = int(value)
  auto = [a for a in AXES if sizes[a] == -1]
  if len(auto) > 1:
    raise ValueError(f"mesh axes {['mesh.' + a for a in auto]} are all -1; at most one axis "
                     "may be -1")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if auto:
    if n_devices % fixed:
      raise ValueError(
          f"mesh.{auto[0]}=-1 cannot be filled: the other axes multiply to {fixed}, which does "
          f"not divide the {n_devices} devices; their product must be one of "
          f"{_divisors(n_devices)}")
    sizes[auto[0]] = n_devices // fixed
  elif fixed != n_devices:
    shape = " x ".join(f"{a}={sizes[a]}" for a in AXES)
    raise ValueError(
        f"mesh {shape} has {fixed} devices but {n_devices} are available; the product of "
        f"mesh.data, mesh.fsdp, mesh.tensor and mesh.sequence must equal {n_devices} "
        "(set one axis to -1 to fill it in)")
  return sizes


def _mesh_axes_of(name: str, rules: Rules) -> tuple[str, ...]:
  axes = dict(rules).get(name)
  if axes is None:
    return ()
  return (axes,) if isinstance(axes, str) else tuple(axes)


def validate_mesh(mesh_cfg: Mapping[str, Any], n_devices: int, model_cfg, batch_size: int,
                  seq_len: int, rules: Rules = DEFAULT_RULES, grad_accum: int = 1
                  ) -> dict[str, int]:
  """Checks a mesh config before any device work; returns the resolved {axis: size}.

  Every logical dimension must divide the product of the mesh axes its rule maps it to:
  n_heads / n_kv_heads / ffn_dim / vocab_size by `tensor`, d_model by `fsdp` (embed→fsdp),
  the micro-batch (batch_size / grad_accum) by data x fsdp, seq_len by `sequence` — whatever the
  rules table says. Raises ValueError naming the field, its value and the allowed values.
  """
  sizes = resolve_mesh_shape(mesh_cfg, n_devices)
  if grad_accum < 1 or batch_size % grad_accum:
    raise ValueError(f"batch_size={batch_size} must be divisible by grad_accum={grad_accum}")
  values = {
      "model.n_heads": model_cfg.n_heads, "model.n_kv_heads": model_cfg.n_kv_heads,
      "model.ffn_dim": model_cfg.ffn_dim, "model.vocab_size": model_cfg.vocab_size,
      "model.d_model": model_cfg.d_model, "model.head_dim": model_cfg.head_dim,
      "model.n_layers": model_cfg.n_layers, "batch_size": batch_size // grad_accum,
      "seq_len": seq_len,
  }
  seen = set()
  for logical, field in _LOGICAL_SIZES:
    axes = tuple(a for a in _mesh_axes_of(logical, rules) if a in sizes)
    shards = math.prod(sizes[a] for a in axes)
    if shards <= 1 or (field, axes) in seen:
      continue
    seen.add((field, axes))
    value = values[field]
    if value % shards == 0:
      continue
    what = f"{field}={value}" if field != "batch_size" or grad_accum == 1 else \
        f"the micro-batch batch_size/grad_accum={batch_size}/{grad_accum}={value}"
    rule = f"sharding.rules maps '{logical}' to {axes if len(axes) > 1 else axes[0]!r}"
    if len(axes) == 1:
      axis = axes[0]
      raise ValueError(
          f"mesh.{axis}={sizes[axis]} does not divide {what} ({rule}); allowed mesh.{axis} "
          f"values: {_divisors(value)}, or change the rule")
    product = " x ".join(f"mesh.{a}={sizes[a]}" for a in axes)
    raise ValueError(
        f"{what} is not divisible by {product} = {shards} ({rule}); use a multiple of "
        f"{shards}, or mesh sizes whose product divides {value}")
  return sizes


def make_mesh(mesh_cfg: Mapping[str, Any], devices=None) -> Mesh:
  """The ("data", "fsdp", "tensor", "sequence") mesh with Auto axis types over `devices`."""
  devices = list(jax.devices() if devices is None else devices)
  sizes = resolve_mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(tuple(sizes[a] for a in AXES), AXES,
                       axis_types=(AxisType.Auto,) * len(AXES), devices=devices)
