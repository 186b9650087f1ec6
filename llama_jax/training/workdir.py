"""A training run's directory: what lives where, and reading its config without restoring it.

  <workdir>/config.json       the resolved training config (`write_config` / `read_config`)
  <workdir>/tokenizer.model   a copy of the run's tokenizer, for generation and evaluation
  <workdir>/checkpoints/      orbax steps: train state + data iterator position
  <workdir>/metrics.jsonl     one JSON object per logged step (+ TensorBoard events)

Reading another run's directory never creates or changes a file in it. The weights themselves
are read by `run_reader`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import ml_collections

from llama_jax.core import files
from llama_jax.core.errors import ConfigError
from llama_jax.model.config import ModelConfig
from llama_jax.training import defaults

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.model"


def _path(path: str | os.PathLike) -> Path:
  return Path(os.path.expanduser(os.fspath(path)))


def is_workdir(path: str | os.PathLike) -> bool:
  """A training run's directory: its config.json is a training config (an HF model directory
  has a config.json too, of another kind)."""
  try:
    saved = json.loads((_path(path) / CONFIG_FILE).read_text())
  except (OSError, ValueError):
    return False
  return isinstance(saved, dict) and {"model", "optim", "data"} <= saved.keys()


def tokenizer_path(path: str | os.PathLike) -> str | None:
  p = _path(path) / TOKENIZER_FILE
  return str(p) if p.is_file() else None


def keep_tokenizer(tokenizer_file: str, workdir: str | os.PathLike) -> None:
  """A copy of the run's tokenizer in the workdir (once), so generation and evaluation find it."""
  dst = _path(workdir) / TOKENIZER_FILE
  src = os.path.expanduser(tokenizer_file)
  if not dst.exists() and os.path.isfile(src):
    data = Path(src).read_bytes()
    files.write_atomic(dst, lambda f: f.write(data), binary=True)


# ------------------------------------------------------------------------------ config.json
def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list) + "\n"


def write_config(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
  """Writes `workdir/config.json` atomically (a crash leaves the old file or the new one)."""
  return files.write_text(_path(workdir) / CONFIG_FILE, to_json(config))


def read_config(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """The config saved in a workdir (or a config.json file), laid over the defaults."""
  path = _path(path)
  if path.is_dir():
    path = path / CONFIG_FILE
  try:
    saved = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"cannot read the training config {path}: {e}") from None
  config = defaults.get_config()
  unknown = defaults.unknown_keys(saved, config)
  if unknown:
    raise ConfigError(f"{path}: unknown config key(s) {unknown}")
  model = saved.pop("model", None)
  config.update(_tuples(saved))
  if model is not None:
    config.model = ml_collections.ConfigDict(model)
  return config


def model_dict(config) -> dict:
  """The `model` part of a training config as a plain dict (ModelConfig.from_dict's input)."""
  model = config.model
  return model.to_dict() if isinstance(model, ml_collections.ConfigDict) else dict(model)


def saved_model_config(path: str | os.PathLike) -> ModelConfig:
  """The ModelConfig a workdir's run was started with (nothing else is checked)."""
  return ModelConfig.from_dict(model_dict(read_config(path)))


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples (ConfigDict fields such as rules and decay_exclude are tuples)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value
