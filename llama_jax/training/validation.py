"""Training configuration: validate a ConfigDict before any device work.

`llama_jax/training/defaults.py` defines every field; a recipe overrides some, the command line
others (`--config.optim.peak_lr=2e-5`). `validate` is the one pass that checks the whole thing
before any device work, so a mistake fails in a second with a message naming the field, the
value and what is allowed, instead of after minutes of compilation:

- unknown keys (not in the defaults) and keys of the wrong type;
- the model (through `ModelConfig`, which checks its own fields and asks the registries for the
  allowed RoPE methods, attention kernels and remat policies);
- the optimizer (through `optim.make_optimizer` on the spec's abstract parameters: ranges,
  schedule, regexes, and that `optim.trainable` matches some parameter);
- the adapter (`config.adapter`: a registered name, its options' values, targets the model
  has, an attention kernel that can take a prefix), whose base comes from `init_from` or from
  the seed; `init_from` must be plain weights (a converted checkpoint or a run without an
  adapter; an adapter run is merged first);
- loop sizes (steps, batch divisible by grad_accum and by the process count, seq_len within the
  model's positions, eval/checkpoint intervals);
- data (files matched by the glob exist and are files, tokenizer file exists and has no more
  tokens than the model has embedding rows; with `data.format="instructions"` the example files
  are parsed, so a broken record fails here, naming its file and line) and `init_from` (a
  converted checkpoint or a training workdir whose parameter shapes match the model);
- the mesh (through `mesh.validate_mesh`: axes divide the devices, heads, batch, ...), when
  the device count is known. Recipe tests pass a hypothetical count.

The result, `TrainConfig`, carries the run's `ModelSpec` (built once here, from one abstract
model) for the loop, the state's creation and restore, and the steps.
"""
from __future__ import annotations

import dataclasses
import glob
import os

import ml_collections

from llama_jax import adapters, evals
from llama_jax.checkpoints import converted
from llama_jax.core.errors import ConfigError, DataError
from llama_jax.data import instructions
from llama_jax.model.config import ModelConfig
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.training import augment, defaults, optim
from llama_jax.training import workdir as workdir_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """The validated pieces the trainer uses; `config` is the locked ConfigDict itself."""
  config: ml_collections.ConfigDict
  spec: ModelSpec  # the run's model: graph, abstract parameters, logical axes, trainable mask
  mesh_shape: dict | None  # {axis: size} with -1 resolved; None when no device count was given
  data_files: tuple[str, ...]  # the files `data.files` matched ('' glob → empty)

  @property
  def model(self) -> ModelConfig:
    return self.spec.config

  @property
  def rules(self) -> tuple:
    """The logical axis → mesh axes table (hashable, see parallel/logical_axes.py)."""
    return self.spec.rules

  @property
  def micro_batch(self) -> int:
    return self.config.batch_size // self.config.grad_accum


def lock(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks the dict (recursively): assigning a key that does not exist raises."""
  config.lock()
  return config


# ------------------------------------------------------------------------------ helpers
def _is_int(v) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _int(c, name: str, minimum: int) -> int:
  value = c[name] if not isinstance(c, ml_collections.ConfigDict) else c.get(name)
  if not _is_int(value) or value < minimum:
    raise ConfigError(f"{name}={value!r}; allowed: an integer >= {minimum}")
  return value


def _check_rules(rules) -> tuple:
  try:
    table = tuple((str(k), v if v is None or isinstance(v, str) else tuple(v)) for k, v in rules)
  except (TypeError, ValueError):
    raise ConfigError(f"sharding.rules={rules!r}; allowed: a sequence of (logical name, mesh "
                      f"axis | tuple of mesh axes | None) pairs") from None
  for name, axes in table:
    for axis in ((axes,) if isinstance(axes, str) else axes or ()):
      if axis not in mesh_lib.AXES:
        raise ConfigError(f"sharding.rules maps {name!r} to unknown mesh axis {axis!r}; "
                          f"allowed mesh axes: {list(mesh_lib.AXES)}")
  return table


def _check_data(config, model: ModelConfig, check_paths: bool) -> tuple[str, ...]:
  d = config.data
  if d.format not in instructions.FORMATS:
    raise ConfigError(f"data.format={d.format!r}; allowed: {list(instructions.FORMATS)}")
  if d.format == "instructions":
    _check_tokenizer_and_counts(d, model, check_paths)
    try:
      return instructions.check_config(d, config.seq_len, bool(heldout_evals(config)),
                                       check_paths)
    except DataError as e:
      raise ConfigError(str(e)) from None
  for name in ("dataset", "text_key", "train_split"):
    if not isinstance(d[name], str) or (not d[name] and not (name == "dataset" and d.files)):
      raise ConfigError(f"data.{name}={d[name]!r} must be a non-empty string")
  if not 0.0 <= d.heldout_fraction < 1.0:
    raise ConfigError(f"data.heldout_fraction={d.heldout_fraction!r}; allowed: [0, 1)")
  heldout = heldout_evals(config)
  if heldout and not d.eval_split and d.heldout_fraction <= 0:
    what = ("eval_every=" + str(config.eval_every) if heldout == ["eval"]
            else f"evals {heldout} (type heldout)")
    raise ConfigError(
        f"{what} needs held-out data, but data.eval_split is '' and "
        f"data.heldout_fraction={d.heldout_fraction}; set one of them, or eval_every=0")
  _check_tokenizer_and_counts(d, model, check_paths)
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
  return files


def _check_tokenizer_and_counts(d, model: ModelConfig, check_paths: bool) -> None:
  for name in ("num_workers", "max_documents", "tokenizer_vocab_size"):
    _int(d, name, 0)
  if d.tokenizer_vocab_size > model.vocab_size:
    raise ConfigError(
        f"data.tokenizer_vocab_size={d.tokenizer_vocab_size} exceeds model.vocab_size="
        f"{model.vocab_size}; the embedding needs a row for every token id: set "
        f"--config.model.vocab_size={d.tokenizer_vocab_size} (or tokenizer_vocab_size=0 to use "
        "model.vocab_size)")
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


def _sentencepiece_vocab_size(path: str) -> int:
  import sentencepiece as spm
  try:
    return spm.SentencePieceProcessor(model_file=path).get_piece_size()
  except Exception as e:  # sentencepiece raises RuntimeError/OSError for unreadable models
    raise ConfigError(f"data.tokenizer={path!r} is not a readable sentencepiece model: {e}") \
        from None


def init_from_kind(path: str) -> str:
  """'converted' (model_config.json + params/) or 'workdir' (a training run's directory)."""
  if converted.is_converted(path):
    return "converted"
  if workdir_lib.is_workdir(path):
    return "workdir"
  p = os.path.expanduser(path)
  if os.path.isfile(os.path.join(p, workdir_lib.CONFIG_FILE)):
    raise ConfigError(
        f"init_from={path!r} holds a config.json that is not a llama_jax training config; if it "
        "is an HF model directory, convert it first: python -m llama_jax.convert --from=hf "
        f"--to=llama_jax --src={path} --dst=<dir>")
  raise ConfigError(
      f"init_from={path!r} is neither a converted checkpoint (model_config.json + params/, made "
      "by `python -m llama_jax.convert`) nor a training workdir (config.json + checkpoints/)"
      + ("" if os.path.exists(p) else "; the path does not exist"))


def _init_from_model(path: str) -> ModelConfig:
  if init_from_kind(path) == "converted":
    try:
      return converted.load_config(os.path.expanduser(path))
    except ValueError as e:
      raise ConfigError(f"init_from={path!r}: {e}") from None
  return workdir_lib.saved_model_config(path)


_SHAPE_FIELDS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                 "ffn_dim", "tie_embeddings")


def _check_init_from(path: str, model: ModelConfig) -> None:
  if init_from_kind(path) == "workdir":
    source_adapter = workdir_lib.read_config(path).adapter.name
    if source_adapter:
      raise ConfigError(
          f"init_from={path!r} is a run with adapter {source_adapter!r}; init_from must be "
          f"plain weights: merge that run first (python -m llama_jax.convert --from=workdir "
          f"--to=llama_jax --merge_adapters --src={path} --dst=<dir>) and start from the result")
  source = _init_from_model(path)
  diff = [f"model.{f}: checkpoint {getattr(source, f)!r} vs config {getattr(model, f)!r}"
          for f in _SHAPE_FIELDS if getattr(source, f) != getattr(model, f)]
  if diff:
    raise ConfigError(f"init_from={path!r} has parameters of another shape: {'; '.join(diff)}")


def _check_evals(config) -> None:
  """Each `evals.<name>` entry: a registered type, `every` >= 0, the type's options."""
  for name, entry in config.evals.items():
    entry = dict(entry)
    if "type" not in entry or "every" not in entry:
      raise ConfigError(f"evals.{name} needs `type` (one of {evals.names()}) and `every` "
                        f"(steps between runs, 0 = only at the end); got {sorted(entry)}")
    cls = evals.get(entry.pop("type"))
    every = entry.pop("every")
    if not _is_int(every) or every < 0:
      raise ConfigError(f"evals.{name}.every={every!r}; allowed: an integer >= 0")
    evals.registry.resolve_options(cls, entry, field=f"evals.{name}.{{name}}")


def heldout_evals(config) -> list[str]:
  return [name for name, entry in config.evals.items()
          if entry.get("type") == "heldout" and entry.get("every")]


# ------------------------------------------------------------------------------ validate
def validate(config: ml_collections.ConfigDict, n_devices: int | None = None,
             process_count: int = 1, check_paths: bool = True) -> TrainConfig:
  """Checks every field; returns the typed pieces. Raises ConfigError (a ValueError).

  n_devices: the global device count to check the mesh against (None skips the mesh-vs-device
  check, e.g. before `jax.distributed` is up). check_paths: False skips the file checks (data
  files, tokenizer, init_from), for validating a recipe on a machine without its data.
  """
  unknown = defaults.unknown_keys(config)
  if unknown:
    raise ConfigError(f"unknown config key(s) {unknown}; every key must be defined in "
                      "llama_jax/training/defaults.py (check the spelling)")
  try:
    model = ModelConfig.from_dict(workdir_lib.model_dict(config))
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e) if str(e).startswith("model") else f"model: {e}") from None

  steps = _int(config, "steps", 1)
  batch = _int(config, "batch_size", 1)
  seq_len = _int(config, "seq_len", 1)
  accum = _int(config, "grad_accum", 1)
  _int(config, "log_every", 1)
  if _int(config, "eval_every", 0):
    _int(config, "eval_batches", 1)
  _int(config, "checkpoint_every", 0)
  _int(config, "keep_checkpoints", 1)
  _int(config, "export_every", 0)
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

  rules = _check_rules(config.sharding.rules)
  try:
    adapter = adapters.from_config(config.adapter, model)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  try:
    optim.learning_rate_schedule(config.optim, steps)  # ranges, schedule, regexes
    spec = ModelSpec.build(model, rules, trainable=config.optim.trainable, adapter=adapter)
    optim.make_optimizer(config.optim, steps, spec.abstract_params)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  _check_evals(config)
  try:
    augment.transform_for(config.augment, model, seq_len)
  except (ValueError, TypeError) as e:
    raise ConfigError(str(e)) from None
  files = _check_data(config, model, check_paths)
  if config.init_from and check_paths:
    _check_init_from(config.init_from, model)

  mesh_shape = None
  if n_devices is not None:
    try:
      mesh_shape = mesh_lib.validate_mesh(config.mesh, n_devices, model, batch, seq_len,
                                          rules=rules, grad_accum=accum)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  return TrainConfig(config=config, spec=spec, mesh_shape=mesh_shape, data_files=files)
