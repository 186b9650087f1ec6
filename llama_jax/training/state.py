"""The train state and its creation directly in its shardings.

`TrainState` (step, params, opt_state, rng) is a plain pytree: params is the nested dict of
`model.spec.to_params` (paths as in `interop/hf_layout.py`), so checkpoints, `init_from` weights
and the optimizer all see the same tree. The state is never built on one host: `abstract_state`
traces the initialiser with `jax.eval_shape`, `state_shardings` maps every leaf to a
NamedSharding through the spec's logical axes (optax moments borrow their parameter's axes), and
`create_state` runs the initialiser under `jax.jit(..., out_shardings=...)` so each device
materialises only its shard.

The optimizer sees only the trainable parameters (the spec's mask: `optim.trainable`, and with
an adapter its parameters alone), so frozen ones have no optimizer state at all. A checkpoint
holds `saved_state`: with an adapter only the adapter's parameters (plus the optimizer state,
step and key); the frozen base comes back from `init_from` (or the seed) at every start.
"""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp

from llama_jax.model import spec as spec_lib
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import sharding as sharding_lib
from llama_jax.training import optim


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32[]: optimizer updates applied so far
  params: Any  # nested dict of arrays, as model.spec.to_params
  opt_state: Any
  rng: jax.Array  # uint32[2]; per-step randomness is fold_in(rng, step), so resume is exact


def make_optimizer(spec: ModelSpec, optim_cfg, total_steps: int):
  """(optax transformation, learning-rate schedule) over the spec's trainable parameters."""
  trainable, _ = spec.split_trainable(spec.abstract_params)
  tx = optim.make_optimizer(optim_cfg, total_steps, trainable)
  return tx, optim.learning_rate_schedule(optim_cfg, total_steps)


def init_state(spec: ModelSpec, tx, seed: int, params=None) -> TrainState:
  """The initial state (pure; jit it). `params=None` draws a random init from `seed`."""
  if params is None:
    params = spec.init_params(seed)
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=tx.init(spec.split_trainable(params)[0]),
                    rng=jax.random.PRNGKey(seed))


def saved_state(state: TrainState, spec: ModelSpec) -> TrainState:
  """What a checkpoint holds of `state` (or of a tree like it: abstract values, shardings)."""
  return state.replace(params=spec.saved_params(state.params))


def with_base(saved: TrainState, base: dict) -> TrainState:
  """A restored `saved_state` completed with the frozen base parameters."""
  return saved.replace(params=spec_lib.combine(saved.params, base))


def abstract_state(spec: ModelSpec, tx, seed: int = 0) -> TrainState:
  """The state's shapes and dtypes via `jax.eval_shape`: nothing is allocated."""
  return jax.eval_shape(lambda: init_state(spec, tx, seed, spec.abstract_params))


def state_shardings(abstract: TrainState, spec: ModelSpec, mesh) -> TrainState:
  """A NamedSharding for every leaf of the state (params and Adam moments by logical axes)."""
  return sharding_lib.tree_shardings(abstract, mesh, spec.rules, param_axes=spec.logical_axes)


def create_state(spec: ModelSpec, tx, seed: int, shardings: TrainState,
                 params=None) -> TrainState:
  """The initial state created directly in `shardings` (no full host copy).

  `params` (e.g. `init_from` weights, already sharded like `shardings.params`) replaces the
  random init; the optimizer state is always fresh.
  """
  if params is None:
    return jax.jit(lambda: init_state(spec, tx, seed), out_shardings=shardings)()
  return jax.jit(lambda p: init_state(spec, tx, seed, p), out_shardings=shardings,
                 donate_argnums=0)(params)
