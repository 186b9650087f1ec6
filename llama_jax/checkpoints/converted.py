"""The converted llama_jax checkpoint: what `init_from`, generation and evaluation load.

Format — a directory holding:

  model_config.json   `ModelConfig.to_dict()` as JSON (shapes, RoPE method and parameters, dtypes,
                      token ids); `ModelConfig.from_dict` reads it back.
  tokenizer.model     (optional) the SentencePiece model the weights were trained with
  params/             the parameter tree (the nested dict of `model.to_params`, paths as in
                      `interop/hf_layout.py`: `embed`, `layers/attention/q`, ..., `lm_head`
                      unless tied),
                      saved by orbax's PyTree checkpointer as compressed zarr3 arrays in the
                      config's `param_dtype`, layers stacked on the leading axis.

Storage choices (measured with `experiments/convert_memory.py`): chunks of at most
`CHUNK_BYTES`, split along the layer axis first, so a process restoring a slice reads about its
slice (tensorstore reads whole chunks, and a single-chunk array would be read in full by every
host); no OCDBT, which stages chunk data in memory before writing its large data files (about
one more copy of the model while saving chunked arrays); and no defensive copy of NumPy
leaves, which orbax otherwise makes before writing.

`load_params` restores straight into a tree of shardings (each process reads only its shards,
so a 65B model never exists as one host copy) or, without shardings, into host NumPy arrays.
Every write goes through `atomic_directory`: files are written into a hidden temporary
directory next to the destination and renamed into place only when complete, so a failure
leaves nothing at the destination and an existing destination is replaced whole or not at all.
Saving is single-process (conversion is a host job); loading works on any number of processes.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from llama_jax.core.errors import CheckpointError
from llama_jax.core.files import atomic_directory
from llama_jax.model.config import DTYPES, ModelConfig
from llama_jax.model.spec import ModelSpec

MODEL_CONFIG_FILE = "model_config.json"
PARAMS_DIR = "params"
TOKENIZER_FILE = "tokenizer.model"  # optional: the tokenizer the model was trained with
CHUNK_BYTES = 64 * 2**20


def np_dtype(name: str) -> np.dtype:
  """NumPy dtype for a ModelConfig dtype name (bfloat16 via ml_dtypes, which JAX ships)."""
  if name not in DTYPES:
    raise CheckpointError(f"dtype={name!r} is not supported; allowed: {list(DTYPES)}")
  if name == "bfloat16":
    import ml_dtypes
    return np.dtype(ml_dtypes.bfloat16)
  return np.dtype(name)


def expected_tree(cfg: ModelConfig) -> dict:
  """The parameter tree of `cfg` as ShapeDtypeStructs (no memory)."""
  return ModelSpec.build(cfg).abstract_params


def _flat(tree) -> dict[str, Any]:
  return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def check_params(where: str, params: dict, cfg: ModelConfig) -> None:
  """Raises CheckpointError unless the tree `params` holds exactly the config's shapes."""
  _check_tree(where, {k: np.shape(v) for k, v in _flat(params).items()}, expected_tree(cfg))


def _check_tree(where: str, got: dict[str, tuple], expected: dict) -> None:
  """Raises CheckpointError unless `got` ({path: shape}) has exactly the expected params."""
  want = {k: tuple(v.shape) for k, v in _flat(expected).items()}
  missing, extra = sorted(want.keys() - got.keys()), sorted(got.keys() - want.keys())
  if missing or extra:
    raise CheckpointError(f"{where}: parameters do not match the model config: missing {missing}, "
                          f"unexpected {extra}")
  for name, shape in want.items():
    if tuple(got[name]) != shape:
      raise CheckpointError(f"{where}: parameter {name} has shape {tuple(got[name])} but the model "
                            f"config implies {shape}")


def _checkpointer(saving: bool = False):
  import orbax.checkpoint as ocp
  if not saving:
    return ocp.PyTreeCheckpointer()
  # See the module docstring for why: no defensive NumPy copy, no OCDBT, zarr3 chunks.
  registry = ocp.type_handlers.create_type_handler_registry(
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
      (jax.Array, ocp.type_handlers.ArrayHandler()))
  return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(
      type_handler_registry=registry, use_ocdbt=False, use_zarr3=True))


def _save_args(params: dict):
  import orbax.checkpoint as ocp
  return jax.tree_util.tree_map_with_path(
      lambda path, _: ocp.SaveArgs(
          chunk_byte_size=CHUNK_BYTES,
          shard_axes=(0,) if getattr(path[0], "key", None) == "layers" else ()),
      params)


def save_converted(path: str | os.PathLike, cfg: ModelConfig, params: dict,
                   overwrite: bool = False, tokenizer: str | os.PathLike | None = None) -> Path:
  """Writes a converted checkpoint (model_config.json + params/) atomically; returns its path.

  `params` leaves may be NumPy arrays (handed to orbax as they are, no extra copy) or jax
  Arrays; they must have the config's shapes and `param_dtype`. `tokenizer`: a SentencePiece
  .model kept alongside as `tokenizer.model` (generation and evaluation then find it).
  """
  import orbax.checkpoint as ocp
  check_params("params to save", params, cfg)
  want = np_dtype(cfg.param_dtype)
  for name, leaf in _flat(params).items():
    if np.dtype(leaf.dtype) != want:
      raise CheckpointError(f"parameter {name} is {np.dtype(leaf.dtype)} but model_config "
                            f"param_dtype is {cfg.param_dtype}; cast it or change param_dtype")
  with atomic_directory(path, overwrite) as tmp:
    (tmp / MODEL_CONFIG_FILE).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
    if tokenizer is not None:
      shutil.copyfile(os.path.expanduser(os.fspath(tokenizer)), tmp / TOKENIZER_FILE)
    with _checkpointer(saving=True) as ckptr:
      ckptr.save(tmp / PARAMS_DIR, args=ocp.args.PyTreeSave(params, save_args=_save_args(params)))
  return Path(path)


def is_converted(path: str | os.PathLike) -> bool:
  """A converted checkpoint directory (it holds model_config.json)."""
  return (Path(os.path.expanduser(os.fspath(path))) / MODEL_CONFIG_FILE).is_file()


def load_config(path: str | os.PathLike) -> ModelConfig:
  """The ModelConfig of a converted checkpoint directory."""
  file = Path(path) / MODEL_CONFIG_FILE
  if not file.is_file():
    raise CheckpointError(
        f"{file} not found: {path} is not a converted llama_jax checkpoint (make one with "
        "`python -m llama_jax.convert --from=hf|meta --to=llama_jax --src=... --dst=...`)")
  try:
    return ModelConfig.from_dict(json.loads(file.read_text()))
  except (json.JSONDecodeError, ValueError, TypeError) as e:
    raise CheckpointError(f"{file}: {e}") from e


def _shardings_tree(shardings, abstract: dict) -> dict:
  """Accepts one Sharding for every leaf, an nnx.State, or a nested dict like the params."""
  from flax import nnx
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda _: shardings, abstract)
  if isinstance(shardings, nnx.State):
    shardings = nnx.to_pure_dict(shardings)
  want, got = _flat(abstract), _flat(shardings)
  if want.keys() != got.keys():
    raise CheckpointError(f"shardings do not match the parameter tree: missing "
                          f"{sorted(want.keys() - got.keys())}, unexpected "
                          f"{sorted(got.keys() - want.keys())}")
  return shardings


def load_params(path: str | os.PathLike, cfg: ModelConfig | None = None, shardings=None,
                expected: dict | None = None) -> dict:
  """Restores the parameter tree of a converted checkpoint.

  cfg: the config to load for (default: the checkpoint's own). Its `param_dtype` is the dtype
    of the result (orbax casts while reading); its shapes must match the stored ones.
  shardings: None → host NumPy arrays; a `jax.sharding.Sharding` for every leaf, or a tree of
    them shaped like the params (nested dict or nnx.State) → jax Arrays restored directly into
    those shardings, each process reading only the slices it holds.
  expected: the parameter tree of `cfg` as ShapeDtypeStructs, when the caller has it (a
    `ModelSpec.abstract_params`); default: built from `cfg`.
  """
  import orbax.checkpoint as ocp
  cfg = cfg or load_config(path)
  expected = expected_tree(cfg) if expected is None else expected
  params_dir = Path(path).absolute() / PARAMS_DIR
  if not params_dir.is_dir():
    raise CheckpointError(f"{params_dir} not found: the checkpoint has no parameters")
  with _checkpointer() as ckptr:
    try:
      stored = ckptr.metadata(params_dir).item_metadata.tree
    except Exception as e:  # orbax raises assorted types for unreadable metadata
      raise CheckpointError(f"{params_dir}: cannot read orbax metadata ({e})") from e
    _check_tree(str(params_dir), {k: tuple(v.shape) for k, v in _flat(stored).items()},
                expected)
    abstract = expected
    dtype = np_dtype(cfg.param_dtype)
    if shardings is None:
      args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray, dtype=dtype),
                          abstract)
    else:
      args = jax.tree.map(
          lambda a, s: ocp.ArrayRestoreArgs(sharding=s, global_shape=a.shape, dtype=dtype),
          abstract, _shardings_tree(shardings, abstract))
    return ckptr.restore(params_dir, args=ocp.args.PyTreeRestore(restore_args=args))


class StoredArray:
  """One stored parameter, read on demand: `a[i]` reads layer i only, `np.asarray(a)` all."""

  def __init__(self, directory: Path):
    import tensorstore as ts
    spec = {"driver": "zarr3", "kvstore": {"driver": "file", "path": str(directory)}}
    self._store = ts.open(spec, open=True, read=True).result()
    self.shape = tuple(self._store.shape)
    self.dtype = np.dtype(self._store.dtype.numpy_dtype)

  def __getitem__(self, index) -> np.ndarray:
    return self._store[index].read().result()

  def __array__(self, dtype=None, copy=None):
    out = self._store.read().result()
    return out if dtype is None else out.astype(dtype)


def lazy_params(path: str | os.PathLike, cfg: ModelConfig | None = None) -> dict | None:
  """The parameter tree as `StoredArray`s (nothing read yet), or None if the checkpoint's layout
  is not one zarr3 array per parameter (e.g. written by orbax with OCDBT).

  Lets an export stream one layer of one tensor at a time instead of restoring the whole model.
  """
  cfg = cfg or load_config(path)
  params_dir = Path(path).absolute() / PARAMS_DIR
  flat = _flat(expected_tree(cfg))
  dirs = {name: params_dir / name.replace("/", ".") for name in flat}
  if not all((d / "zarr.json").is_file() for d in dirs.values()):
    return None
  out: dict = {}
  for name, directory in dirs.items():
    array = StoredArray(directory)
    if array.shape != tuple(flat[name].shape):
      raise CheckpointError(f"{directory}: parameter {name} has shape {array.shape} but the model "
                            f"config implies {tuple(flat[name].shape)}")
    node = out
    *parents, leaf = name.split("/")
    for key in parents:
      node = node.setdefault(key, {})
    node[leaf] = array
  return out
