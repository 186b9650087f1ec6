"""Reading another training run's weights: its validated config and its newest parameters.

Used by `init_from` (a workdir as the starting point), the converter's `--from=workdir`,
generation and evaluation, so none of them needs to know the train-state layout. Checkpoints are
opened read-only: reading another run never creates or changes a file in it.

An adapter run's checkpoints hold its adapter only; `latest_params` completes them with the
run's base (`base_params`: its `init_from`, else the random init of its seed), so every reader
gets the whole model (base + adapter, as the run's spec describes it).
"""
from __future__ import annotations

import os

import jax

from llama_jax.checkpoints import converted
from llama_jax.checkpoints import manager as checkpoint
from llama_jax.core.errors import CheckpointError
from llama_jax.model.config import ModelConfig
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import sharding
from llama_jax.training import state as state_lib
from llama_jax.training import validation, workdir as workdir_lib


def load_training_config(path: str | os.PathLike) -> validation.TrainConfig:
  """The validated config the run was started with (paths are not re-checked)."""
  return validation.validate(workdir_lib.read_config(path), check_paths=False)


def model_config(path: str | os.PathLike) -> ModelConfig:
  return load_training_config(path).model


def latest_params(path: str | os.PathLike, shardings=None, spec: ModelSpec | None = None):
  """(parameters, step) of the newest readable checkpoint in the workdir.

  `shardings`: a tree of shardings for the parameters (default: everything on the first
  device); `spec`: the model to read them as (default: the run's own; otherwise its shapes must
  be the run's, and the run's trainable mask and adapter are used for the saved tree). The
  saved optimizer state is restored alongside (orbax restores the saved tree) and dropped.
  """
  source = load_training_config(path)
  config = source.config
  if spec is None:
    spec = source.spec
  else:
    spec = ModelSpec.build(spec.config, spec.rules, trainable=config.optim.trainable,
                           adapter=source.spec.adapter)
  tx, _ = state_lib.make_optimizer(spec, config.optim, config.steps)
  abstract = state_lib.abstract_state(spec, tx, config.seed)
  if shardings is None:
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state_shardings = jax.tree.map(lambda _: one, abstract)
    shardings = state_shardings.params
  elif isinstance(first := jax.tree.leaves(shardings)[0], jax.sharding.NamedSharding):
    state_shardings = state_lib.state_shardings(abstract, spec, first.mesh).replace(
        params=shardings)
  else:  # one device (a reader's default, also for an adapter run's base): all of it there
    state_shardings = jax.tree.map(lambda _: first, abstract).replace(params=shardings)
  saved = state_lib.saved_state(sharding.with_shardings(abstract, state_shardings), spec)
  with checkpoint.CheckpointManager(path, keep=10**6, read_only=True) as mgr:
    restored = mgr.restore(saved)
  if restored is None:
    raise CheckpointError(f"{os.fspath(path)!r} is a training workdir without checkpoints yet")
  state, _, step = restored
  params = state.params
  if spec.saved is not None:
    params = state_lib.with_base(state, base_params(config, spec, shardings)).params
  return params, step


def base_params(config, spec: ModelSpec, shardings) -> dict:
  """The frozen base of an adapter run: its `init_from` weights, or the random init of its
  seed; placed in the base part of `shardings` (a tree like the parameters)."""
  base_shardings = spec.base_params(shardings)
  base_spec = ModelSpec.build(spec.config, spec.rules)
  if config.init_from:
    path = os.path.expanduser(config.init_from)
    if validation.init_from_kind(path) == "converted":
      return converted.load_params(path, spec.config, shardings=base_shardings,
                                   expected=base_spec.abstract_params)
    return latest_params(path, base_shardings, base_spec)[0]
  init = jax.jit(lambda: base_spec.init_params(config.seed), out_shardings=base_shardings)
  return init()
