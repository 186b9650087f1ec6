"""Reading another training run's weights: its validated config and its newest parameters.

Used by `init_from` (a workdir as the starting point), the converter's `--from=workdir`,
generation and evaluation, so none of them needs to know the train-state layout. Checkpoints are
opened read-only: reading another run never creates or changes a file in it.
"""
from __future__ import annotations

import os

import jax

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
  device); `spec`: the model to read them as (default: the run's own). The saved optimizer state
  is restored alongside (orbax restores the saved tree) and dropped.
  """
  if spec is None:
    source = load_training_config(path)
    config, spec = source.config, source.spec
  else:  # the caller's model (its shapes checked against the run's): only the optimizer is read
    config = workdir_lib.read_config(path)
  tx, _ = state_lib.make_optimizer(spec, config.optim, config.steps)
  abstract = state_lib.abstract_state(spec, tx, config.seed)
  if shardings is None:
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state_shardings = jax.tree.map(lambda _: one, abstract)
  else:
    mesh = jax.tree.leaves(shardings)[0].mesh
    state_shardings = state_lib.state_shardings(abstract, spec, mesh).replace(params=shardings)
  with checkpoint.CheckpointManager(path, keep=10**6, read_only=True) as mgr:
    restored = mgr.restore(sharding.with_shardings(abstract, state_shardings))
  if restored is None:
    raise CheckpointError(f"{os.fspath(path)!r} is a training workdir without checkpoints yet")
  state, _, step = restored
  return state.params, step
