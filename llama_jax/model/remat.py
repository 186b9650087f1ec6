"""Rematerialisation policies by name (`model.remat`): what a layer saves for its backward pass.

The model tags intermediate values with `checkpoint_name` ("query", "key", "value", "attention",
"mlp_gate", "mlp_up"); a policy says which of them (or which matmul outputs) to keep, everything
else is recomputed in the backward pass. All policies give the same loss and gradients; they
trade memory for recomputation. `none` keeps everything (no remat); `full` keeps nothing.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax

from llama_jax.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class RematPolicy:
  name: str
  policy: Callable | None  # a jax.checkpoint policy; None = save nothing
  remat: bool = True  # False: the layer is not rematerialised at all
  description: str = ""


POLICIES: Registry[RematPolicy] = Registry("remat policy", "model.remat")
_names = jax.checkpoint_policies.save_only_these_names
for _policy in (
    RematPolicy("none", None, remat=False, description="save everything (no remat)"),
    RematPolicy("full", None, description="save nothing, recompute the whole block"),
    RematPolicy("save_dots", jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                description="save every matmul output without batch dimensions"),
    RematPolicy("save_qkv", _names("query", "key", "value"),
                description="save the rotated queries, keys and values"),
    RematPolicy("save_attention", _names("query", "key", "value", "attention"),
                description="save q, k, v and the attention output"),
    RematPolicy("minimal", _names("query", "key", "value", "attention", "mlp_gate", "mlp_up"),
                description="save q, k, v, attention and the MLP gate/up projections"),
):
  POLICIES.register(_policy)


def names() -> list[str]:
  return POLICIES.names()


def remat(fn, policy: str):
  """Wraps a layer function with the named rematerialisation policy ('none' = no remat)."""
  entry = POLICIES.get(policy)
  if not entry.remat:
    return fn
  return jax.checkpoint(fn, policy=entry.policy, prevent_cse=False)
