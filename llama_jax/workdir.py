"""Reading a training run's directory: its model config, tokenizer and latest parameters.

A workdir (what `python -m llama_jax.train` writes) holds `config.json`, `tokenizer.model` and
`checkpoints/`. This module lets every consumer of weights — `init_from`, the converter's
`--from=workdir`, generation and evaluation — read one without knowing the train-state layout.
Checkpoints are opened read-only: reading another run never creates or changes a file in it.
"""
from __future__ import annotations

import os
from pathlib import Path

import jax

from llama_jax import config as config_lib
from llama_jax.model_config import ModelConfig

TOKENIZER_FILE = "tokenizer.model"


def is_workdir(path: str | os.PathLike) -> bool:
  """A training run's directory: its config.json is a training config (an HF model directory
  has a config.json too, of another kind)."""
  import json
  p = Path(os.path.expanduser(path)) / config_lib.CONFIG_FILE
  try:
    saved = json.loads(p.read_text())
  except (OSError, ValueError):
    return False
  return isinstance(saved, dict) and {"model", "optim", "data"} <= saved.keys()


def load_training_config(path: str | os.PathLike):
  """The validated config the run was started with (paths are not re-checked)."""
  return config_lib.validate(
      config_lib.load_json(Path(os.path.expanduser(path)) / config_lib.CONFIG_FILE),
      check_paths=False)


def load_model_config(path: str | os.PathLike) -> ModelConfig:
  return load_training_config(path).model


def tokenizer_path(path: str | os.PathLike) -> str | None:
  p = Path(os.path.expanduser(path)) / TOKENIZER_FILE
  return str(p) if p.is_file() else None


def latest_params(path: str | os.PathLike, shardings=None, model_cfg: ModelConfig | None = None,
                  rules=None):
  """(parameters, step) of the newest readable checkpoint in the workdir.

  `shardings`: a tree of shardings for the parameters (default: everything on the first
  device). The saved optimizer state is restored alongside (orbax restores the saved tree) and
  dropped.
  """
  from llama_jax import checkpoint, sharding, train_step
  source = load_training_config(path)
  cfg = model_cfg or source.model
  tx, _ = train_step.make_optimizer(cfg, source.config.optim, source.config.steps)
  abstract = train_step.abstract_state(cfg, tx, source.config.seed)
  if shardings is None:
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state_shardings = jax.tree.map(lambda _: one, abstract)
  else:
    mesh = jax.tree.leaves(shardings)[0].mesh
    state_shardings = train_step.state_shardings(abstract, cfg, mesh, rules or source.rules)
    state_shardings = state_shardings.replace(params=shardings)
  with checkpoint.CheckpointManager(path, keep=10**6, read_only=True) as mgr:
    restored = mgr.restore(sharding.with_shardings(abstract, state_shardings))
  if restored is None:
    raise ValueError(f"{os.fspath(path)!r} is a training workdir without checkpoints")
  state, _, step = restored
  return state.params, step
