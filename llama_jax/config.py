"""Training configuration: lock, validate and split a ConfigDict into typed pieces.

`configs/base.py` defines every field; a recipe overrides some, the command line others
(`--config.optim.peak_lr=2e-5`). `validate` is the one pass that checks the whole thing before
any device work, so a mistake fails in a second with a message naming the field, the value and
what is allowed, instead of after minutes of compilation:

- unknown keys (not in `configs/base.py`) and keys of the wrong type;
- the model (through `ModelConfig`, which checks its own fields and the RoPE parameters);
- the optimizer (through `optim.make_optimizer` on the abstract parameters: ranges, schedule,
  regexes, and that `optim.trainable` matches some parameter);
- loop sizes (steps, batch divisible by grad_accum and by the process count, seq_len within the
  model's positions, eval/checkpoint intervals);
- data (files matched by the glob exist and are files, tokenizer file exists and has no more
  tokens than the model has embedding rows) and `init_from` (a converted checkpoint or a
  training workdir whose parameter shapes match the model);
- the mesh (through `sharding.validate_mesh`: axes divide the devices, heads, batch, ...), when
  the device count is known. Recipe tests pass a hypothetical count.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from pathlib import Path
from typing import Any, Mapping

import ml_collections

from llama_jax.model_config import ModelConfig


class ConfigError(ValueError):
  """A configuration value that cannot work; the message names the field and what is allowed."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The validated pieces the trainer uses; `config` is the locked ConfigDict itself."""
  config: ml_collections.ConfigDict
  model: ModelConfig
  rules: tuple  # logical axis → mesh axes table (hashable, see logical_axes.py)
  mesh_shape: dict | None  # {axis: size} with -1 resolved; None when no device count was given
  data_files: tuple[str, ...]  # the files `data.files` matched ('' glob → empty)

  @property
  def micro_batch(self) -> int:
    return self.config.batch_size // self.config.grad_accum


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the dict (recursively): assigning a key that does not exist raises."""
  config.lock()
  return config


def base_config() -> ml_collections.ConfigDict:
  from configs import base  # the single source of defaults
  return base.get_config()


# ------------------------------------------------------------------------------ helpers
def _unknown_keys(got: Mapping, want: Mapping, prefix: str = "") -> list[str]:
  """Dotted names of keys in `got` that `want` does not define, recursing into sub-dicts."""
  out = []
  for key in got.keys():
    name = f"{prefix}{key}"
    if key not in want:
      out.append(name)
    elif _is_dict(want[key]) and _is_dict(got[key]) and key != "model":
      out.extend(_unknown_keys(got[key], want[key], name + "."))
  return out


def _is_dict(v) -> bool:
  return isinstance(v, (Mapping, ml_collections.ConfigDict))


def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _int(c, name: str, minimum: int) -> int:
  value = c[name] if not isinstance(c, ml_collections.ConfigDict) else c.get(name)
  if not _is_int(value) or value < minimum:
    raise ConfigError(f"{name}={value!r}; allowed: an integer >= {minimum}")
  return value


def _model_dict(config) -> dict:
  model = config.model
  return model.to_dict() if isinstance(model, ml_collections.ConfigDict) else dict(model)


def _check_rules(rules) -> tuple:
  from llama_jax import sharding
  try:
    table = tuple((str(k), v if v is None or isinstance(v, str) else tuple(v)) for k, v in rules)
  except (TypeError, ValueError):
    raise ConfigError(f"sharding.rules={rules!r}; allowed: a sequence of (logical name, mesh "
                      f"axis | tuple of mesh axes | None) pairs") from None
  for name, axes in table:
    for axis in ((axes,) if isinstance(axes, str) else axes or ()):
      if axis not in sharding.AXES:
        raise ConfigError(f"sharding.rules maps {name!r} to unknown mesh axis {axis!r}; "
                          f"allowed mesh axes: {list(sharding.AXES)}")
  return table


def _check_data(config, model: ModelConfig, check_paths: bool) -> tuple[str, ...]:
  d = config.data
  for name in ("dataset", "text_key", "train_split"):
    if not isinstance(d[name], str) or (not d[name] and not (name == "dataset" and d.files)):
      raise ConfigError(f"data.{name}={d[name]!r} must be a non-empty string")
  if not 0.0 <= d.heldout_fraction < 1.0:
    raise ConfigError(f"data.heldout_fraction={d.heldout_fraction!r}; allowed: [0, 1)")
  if config.eval_every and not d.eval_split and d.heldout_fraction <= 0:
    raise ConfigError(
        f"eval_every={config.eval_every} needs held-out data, but data.eval_split is '' and "
        f"data.heldout_fraction={d.heldout_fraction}; set one of them, or eval_every=0")
  for name in ("num_workers", "max_documents", "tokenizer_vocab_size"):
    _int(d, name, 0)
  if d.tokenizer_vocab_size > model.vocab_size:
    raise ConfigError(
        f"data.tokenizer_vocab_size={d.tokenizer_vocab_size} exceeds model.vocab_size="
        f"{model.vocab_size}; the embedding needs a row for every token id: set "
        f"--config.model.vocab_size={d.tokenizer_vocab_size} (or tokenizer_vocab_size=0 to use "
        "model.vocab_size)")
  files: tuple[str, ...] = ()
  if d.files and check_paths:
    files = tuple(sorted(f for f in glob.glob(os.path.expanduser(d.files), recursive=True)))
    if not files:
      raise ConfigError(f"data.files={d.files!r} matches no file; give a glob of UTF-8 text "
                        "files (e.g. 'corpus/**/*.txt'), or '' to use data.dataset")
    dirs = [f for f in files if not os.path.isfile(f)]
    if len(dirs) == len(files):
      raise ConfigError(f"data.files={d.files!r} matches only directories ({dirs[:3]}); "
                        "the glob must match text files")
    files = tuple(f for f in files if os.path.isfile(f))
  if d.tokenizer and check_paths:
    path = os.path.expanduser(d.tokenizer)
    if not os.path.isfile(path):
      raise ConfigError(f"data.tokenizer={d.tokenizer!r} does not exist; give a sentencepiece "
                        ".model file, or '' to train one on the corpus")
    size = _sentencepiece_vocab_size(path)
    # Fewer tokens than embedding rows is allowed (padded vocabularies); more would index
    # past the table.
    if size > model.vocab_size:
      raise ConfigError(
          f"data.tokenizer={d.tokenizer!r} has {size} tokens but model.vocab_size="
          f"{model.vocab_size}; token ids would index past the embedding table (set "
          f"--config.model.vocab_size={size})")
  return files


def _sentencepiece_vocab_size(path: str) -> int:
  import sentencepiece as spm
  try:
    return spm.SentencePieceProcessor(model_file=path).get_piece_size()
  except Exception as e:  # sentencepiece raises RuntimeError/OSError for unreadable models
    raise ConfigError(f"data.tokenizer={path!r} is not a readable sentencepiece model: {e}") \
        from None


def init_from_kind(path: str) -> str:
  """'converted' (model_config.json + params/) or 'workdir' (a training run's directory)."""
  p = Path(os.path.expanduser(path))
  if (p / "model_config.json").is_file():
    return "converted"
  from llama_jax import workdir as workdir_lib
  if workdir_lib.is_workdir(p):
    return "workdir"
  if (p / CONFIG_FILE).is_file():
    raise ConfigError(
        f"init_from={path!r} holds a config.json that is not a llama_jax training config; if it "
        "is an HF model directory, convert it first: python -m llama_jax.convert --from=hf "
        f"--to=llama_jax --src={path} --dst=<dir>")
  raise ConfigError(
      f"init_from={path!r} is neither a converted checkpoint (model_config.json + params/, made "
      "by `python -m llama_jax.convert`) nor a training workdir (config.json + checkpoints/)"
      + ("" if p.exists() else "; the path does not exist"))


def _init_from_model(path: str) -> ModelConfig:
  if init_from_kind(path) == "converted":
    from llama_jax import checkpoint_io
    try:
      return checkpoint_io.load_config(os.path.expanduser(path))
    except ValueError as e:
      raise ConfigError(f"init_from={path!r}: {e}") from None
  saved = load_json(Path(os.path.expanduser(path)) / CONFIG_FILE)
  return ModelConfig.from_dict(_model_dict(saved))


_SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                 "ffn_dim", "tie_embeddings")


def _check_init_from(path: str, model: ModelConfig) -> None:
  source = _init_from_model(path)
  diff = [f"model.{f}: checkpoint {getattr(source, f)!r} vs config {getattr(model, f)!r}"
          for f in _SHAPE_FIELDS if getattr(source, f) != getattr(model, f)]
  if diff:
    raise ConfigError(f"init_from={path!r} has parameters of another shape: {'; '.join(diff)}")


# ------------------------------------------------------------------------------ validate
def validate(config: ml_collections.ConfigDict, n_devices: int | None = None,
             process_count: int = 1, check_paths: bool = True) -> TrainConfig:
  """Checks every field; returns the typed pieces. Raises ConfigError (a ValueError).

  n_devices: the global device count to check the mesh against (None skips the mesh-vs-device
  check, e.g. before `jax.distributed` is up). check_paths: False skips the file checks (data
  files, tokenizer, init_from), for validating a recipe on a machine without its data.
  """
  unknown = _unknown_keys(config, base_config())
  if unknown:
    raise ConfigError(f"unknown config key(s) {unknown}; every key must be defined in "
                      "configs/base.py (check the spelling)")
  try:
    model = ModelConfig.from_dict(_model_dict(config))
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e) if str(e).startswith("model") else f"model: {e}") from None

  steps = _int(config, "steps", 1)
  batch = _int(config, "batch_size", 1)
  seq_len = _int(config, "seq_len", 1)
  accum = _int(config, "grad_accum", 1)
  _int(config, "log_every", 1)
  eval_every = _int(config, "eval_every", 0)
  if eval_every:
    _int(config, "eval_batches", 1)
  _int(config, "checkpoint_every", 0)
  _int(config, "keep_checkpoints", 1)
  _int(config, "sample_tokens", 0)
  _int(config, "seed", 0)
  if batch % accum:
    raise ConfigError(f"batch_size={batch} is not divisible by grad_accum={accum}; allowed "
                      f"grad_accum values: {[a for a in range(1, batch + 1) if batch % a == 0]}")
  if batch % process_count:
    raise ConfigError(f"batch_size={batch} is not divisible by the {process_count} processes; "
                      "each process loads batch_size / process_count rows")
  if seq_len > model.max_position_embeddings:
    raise ConfigError(f"seq_len={seq_len} exceeds model.max_position_embeddings="
                      f"{model.max_position_embeddings}; raise max_position_embeddings (with a "
                      "RoPE scaling method) or shorten seq_len")
  if not isinstance(config.sample_prompt, str):
    raise ConfigError(f"sample_prompt={config.sample_prompt!r} must be a string")

  from llama_jax import model as model_lib
  from llama_jax import optim
  from flax import nnx
  abstract_params = nnx.to_pure_dict(nnx.state(model_lib.abstract(model), nnx.Param))
  try:
    optim.make_optimizer(config.optim, steps, abstract_params)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  files = _check_data(config, model, check_paths)
  if config.init_from and check_paths:
    _check_init_from(config.init_from, model)
  rules = _check_rules(config.sharding.rules)

  mesh_shape = None
  if n_devices is not None:
    from llama_jax import sharding
    try:
      mesh_shape = sharding.validate_mesh(config.mesh, n_devices, model, batch, seq_len,
                                          rules=rules, grad_accum=accum)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  return TrainConfig(config=config, model=model, rules=rules, mesh_shape=mesh_shape,
                     data_files=files)


# ------------------------------------------------------------------------------ files
CONFIG_FILE = "config.json"


def to_json(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list) + "\n"


def write(config: ml_collections.ConfigDict, workdir: str | os.PathLike) -> Path:
  """Writes `workdir/config.json` atomically (a crash leaves the old file or the new one)."""
  path = Path(workdir) / CONFIG_FILE
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f".{CONFIG_FILE}.tmp-{os.getpid()}")
  tmp.write_text(to_json(config))
  os.replace(tmp, path)
  return path


def load_json(path: str | os.PathLike) -> ml_collections.ConfigDict:
  """A config written by `write`, laid over the base defaults (unknown keys are errors)."""
  try:
    saved = json.loads(Path(path).read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"cannot read the training config {path}: {e}") from None
  config = base_config()
  unknown = _unknown_keys(saved, config)
  if unknown:
    raise ConfigError(f"{path}: unknown config key(s) {unknown}")
  model = saved.pop("model", None)
  config.update(_tuples(saved))
  if model is not None:
    config.model = ml_collections.ConfigDict(model)
  return config


def _tuples(value: Any) -> Any:
  """JSON lists back to tuples (ConfigDict fields such as rules and decay_exclude are tuples)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value

