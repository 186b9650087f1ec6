"""Logical axis names → mesh axes.

The model names every parameter dimension (`embed`, `mlp`, `heads`, `kv_heads`, `head_dim`,
`vocab`, `layers`, `norm`) and constrains activations at block boundaries with `act_*` names.
A rules table — a tuple of (logical name, mesh axis | tuple of mesh axes | None) pairs, kept in
the config — decides the layout, so switching FSDP ↔ tensor parallelism is a config change.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
from jax.sharding import PartitionSpec as P

Rules = tuple[tuple[str, "str | tuple[str, ...] | None"], ...]

# Parameters are sharded over fsdp (ZeRO-3 style) and tensor; activations over data x fsdp on
# the batch, over sequence on the length.
DEFAULT_RULES: Rules = (
    ("batch", ("data", "fsdp")),
    ("length", "sequence"),
    ("act_batch", ("data", "fsdp")),
    ("act_length", "sequence"),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("embed", "fsdp"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("vocab", "tensor"),
    ("layers", None),
    ("norm", None),
)


def spec(names: Sequence[str | None], rules: Rules) -> P:
  """The PartitionSpec for one array's logical axis names; a mesh axis is used at most once."""
  table = dict(rules)
  used: set[str] = set()
  out = []
  for name in names:
    axes = table.get(name) if name is not None else None
    if axes is None:
      out.append(None)
      continue
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a not in used)  # never map one mesh axis twice
    used.update(axes)
    out.append(axes[0] if len(axes) == 1 else (axes or None))
  return P(*out)


def constrain(x: jax.Array, names: Sequence[str | None], rules: Rules | None) -> jax.Array:
  """with_sharding_constraint by logical names; a no-op when no rules are given (no mesh)."""
  if rules is None:
    return x
  return jax.lax.with_sharding_constraint(x, spec(names, rules))
