"""HF `LlamaForCausalLM` checkpoint directories: read into llama_jax parameters, write from them.

An HF directory holds `config.json` and either one `model.safetensors` or shards
`model-0000k-of-0000N.safetensors` listed in `model.safetensors.index.json`
(`{"metadata": {"total_size": bytes}, "weight_map": {tensor name: shard file}}`). Tensor names
and layouts are mapped by `interop/hf_layout.py`; this module only deals with files.

Reading streams one tensor at a time through `safetensors.safe_open`, reopening the file for
each tensor: safe_open memory-maps the whole file and every page it has read stays resident
(and counts in the process RSS) until the file is closed, so reading all tensors of one open
file would hold the checkpoint twice. Everything is checked before the first tensor is read:
every expected tensor present, every shape the one config.json implies, no unknown tensors
(`rotary_emb.inv_freq` buffers of old conversions are ignored).

Writing streams too: the safetensors header (names, dtypes, shapes, offsets) is known from the
config before any tensor exists, so each shard file is its header followed by the tensors'
bytes appended as they are produced — the model plus one tensor in memory, whatever the shard
size. (The safetensors library's writers take a whole shard in memory.)
"""
from __future__ import annotations

import json
import math
import os
import re
import struct
from pathlib import Path

import numpy as np

from llama_jax.checkpoints.converted import (
  CheckpointError,
  atomic_directory,
  check_params,
  np_dtype,
)
from llama_jax.interop import hf_layout as weights
from llama_jax.interop import hf_tokenizer
from llama_jax.model.config import ModelConfig

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

# safetensors dtype codes <-> ModelConfig dtype names (the float types a LLaMA is stored in).
_CODES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}
_NAMES = {v: k for k, v in _CODES.items()}
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")


def read_config(src: str | os.PathLike, **overrides) -> ModelConfig:
  """ModelConfig from `src/config.json`; errors name the file and the offending field."""
  file = Path(src) / CONFIG
  if not file.is_file():
    raise CheckpointError(f"{file} not found: an HF checkpoint directory needs config.json")
  try:
    hf = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{file} is not valid JSON: {e}") from e
  if hf.get("model_type", "llama") != "llama":
    raise CheckpointError(f"{file}: model_type={hf['model_type']!r}; only 'llama' "
                          "(LlamaForCausalLM) checkpoints are supported")
  # A checkpoint loaded to be run gets the backend's fastest kernel for each call
  # (attention.resolve), not the full-score reference: on CPU `xla` scores 1,024-token windows
  # at ~2/3 the speed of `auto` (xla_blocked).
  overrides.setdefault("attention", "auto")
  try:
    return ModelConfig.from_hf(hf, **overrides)
  except (ValueError, KeyError, TypeError) as e:
    raise CheckpointError(f"{file}: {e}") from e


def _safe_open(file: Path):
  from safetensors import safe_open
  try:
    return safe_open(str(file), framework="numpy")
  except Exception as e:  # SafetensorError and OSError from the Rust reader
    raise CheckpointError(f"shard {file} cannot be read (truncated or corrupt?): {e}") from e


def tensor_index(src: str | os.PathLike) -> dict[str, tuple[Path, tuple[int, ...], str]]:
  """{tensor name: (file, shape, safetensors dtype code)} from the headers, no tensor data read."""
  src = Path(src)
  index_file = src / INDEX
  if index_file.is_file():
    try:
      weight_map = json.loads(index_file.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise CheckpointError(f"{index_file} is not a valid safetensors index: {e}") from e
    files = sorted(set(weight_map.values()))
  elif (src / SINGLE).is_file():
    weight_map, files = None, [SINGLE]
  else:
    others = sorted(p.name for p in src.glob("*.bin")) + sorted(p.name for p in src.glob("*.pth"))
    raise CheckpointError(
        f"no {SINGLE} or {INDEX} in {src}" + (f" (found {others}: only safetensors checkpoints "
                                              "are read; HF's save_pretrained writes them)"
                                              if others else ""))
  missing = [f for f in files if not (src / f).is_file()]
  if missing:
    raise CheckpointError(f"shard file(s) {missing} listed in {index_file} are missing from {src}")
  out = {}
  for name in files:
    with _safe_open(src / name) as f:
      for key in f.keys():
        view = f.get_slice(key)
        out[key] = (src / name, tuple(view.get_shape()), view.get_dtype())
  if weight_map is not None:
    absent = sorted(k for k, f in weight_map.items() if out.get(k, (None,))[0] != src / f)
    if absent:
      raise CheckpointError(f"{index_file} lists tensor(s) not found in their shard: "
                            f"{[(k, weight_map[k]) for k in absent[:5]]}"
                            + (f" and {len(absent) - 5} more" if len(absent) > 5 else ""))
  return out


def _checked_index(src: Path, cfg: ModelConfig) -> dict:
  index = {k: v for k, v in tensor_index(src).items() if not _IGNORED.search(k)}
  shapes = weights.expected_hf_shapes(cfg)
  missing = [k for k in shapes if k not in index]
  if missing:
    raise CheckpointError(f"{src}: {len(missing)} tensor(s) that config.json implies are missing: "
                          f"{missing[:8]}" + (" ..." if len(missing) > 8 else ""))
  extra = sorted(set(index) - set(shapes))
  if extra:
    raise CheckpointError(f"{src}: tensor(s) {extra[:8]} are not part of a LlamaForCausalLM with "
                          f"this config.json (tie_word_embeddings={cfg.tie_embeddings})")
  for name, shape in shapes.items():
    file, got, code = index[name]
    if got != shape:
      raise CheckpointError(f"tensor {name} in {file.name} has shape {got} but {src / CONFIG} "
                            f"implies {shape}")
    if code not in _CODES:
      raise CheckpointError(f"tensor {name} in {file.name} has dtype {code}; supported: "
                            f"{sorted(_CODES)}")
  return index


def read_hf(src: str | os.PathLike, dtype: str | None = None) -> tuple[ModelConfig, dict]:
  """(ModelConfig, nested NumPy params) from an HF directory, one tensor in memory at a time.

  dtype: output parameter dtype; default: the dtype of the embedding on disk. The returned
  config's `param_dtype` and compute `dtype` are set to it.
  """
  src = Path(src)
  cfg = read_config(src)
  index = _checked_index(src, cfg)
  dtype = dtype or _CODES[index["model.embed_tokens.weight"][2]]
  cfg = cfg.replace(param_dtype=dtype, dtype=dtype)

  def get(name):
    file = index[name][0]
    with _safe_open(file) as f:  # reopened per tensor: see the module docstring
      try:
        return f.get_tensor(name)
      except Exception as e:
        raise CheckpointError(f"tensor {name} in {file} cannot be read: {e}") from e

  return cfg, weights.hf_to_params(cfg, get, dtype=np_dtype(dtype))


def _plan_shards(cfg: ModelConfig, dtype: str, max_shard_bytes: int) -> list[list[str]]:
  """Tensor names grouped into shards in write order, each shard <= max_shard_bytes (unless a
  single tensor is larger)."""
  itemsize = np_dtype(dtype).itemsize
  shards, size = [[]], 0
  for name, shape in weights.expected_hf_shapes(cfg).items():
    nbytes = math.prod(shape) * itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += nbytes
  return shards


def _header(names: list[str], shapes: dict, dtype: str) -> bytes:
  itemsize, start, entries = np_dtype(dtype).itemsize, 0, {"__metadata__": {"format": "pt"}}
  for name in names:
    end = start + math.prod(shapes[name]) * itemsize
    entries[name] = {"dtype": _NAMES[dtype], "shape": list(shapes[name]),
                     "data_offsets": [start, end]}
    start = end
  header = json.dumps(entries, separators=(",", ":")).encode()
  header += b" " * (-len(header) % 8)  # the data buffer starts 8-byte aligned
  return struct.pack("<Q", len(header)) + header


def write_hf(dst: str | os.PathLike, cfg: ModelConfig, params: dict, dtype: str | None = None,
             max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False,
             tokenizer: str | os.PathLike | None = None) -> list[Path]:
  """Writes an HF LlamaForCausalLM directory atomically; returns the files written.

  dtype: on-disk dtype (default: cfg.param_dtype). More than one shard → model-0000k-of-
  0000N.safetensors + model.safetensors.index.json, else model.safetensors. tokenizer: a
  SentencePiece .model to include with the files `AutoTokenizer` reads (`hf_tokenizer`).
  """
  dtype = dtype or cfg.param_dtype
  if dtype not in _NAMES:
    raise CheckpointError(f"dtype={dtype!r} cannot be written; allowed: {sorted(_NAMES)}")
  check_params("params to export", params, cfg)
  out_dtype = np_dtype(dtype)
  shapes = weights.expected_hf_shapes(cfg)
  plan = _plan_shards(cfg, dtype, max_shard_bytes)
  n = len(plan)
  files = [SINGLE] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
  tensors = weights.params_to_hf(cfg, params)
  weight_map: dict[str, str] = {}
  with atomic_directory(dst, overwrite) as tmp:
    hf_config = cfg.to_hf(torch_dtype=dtype)
    (tmp / CONFIG).write_text(json.dumps(hf_config, indent=2) + "\n")
    tokenizer_files = [] if tokenizer is None else [
        Path(dst) / p.name for p in hf_tokenizer.write_tokenizer(tmp, tokenizer, cfg)]
    for file, names in zip(files, plan):
      with open(tmp / file, "wb") as f:
        f.write(_header(names, shapes, dtype))
        for want in names:
          name, array = next(tensors)
          if name != want or array.shape != shapes[name]:  # the header is already written
            raise CheckpointError(f"tensor {name} {array.shape} arrived where the header has "
                                  f"{want} {shapes[want]}: weights.params_to_hf order changed?")
          f.write(np.ascontiguousarray(array, dtype=out_dtype).reshape(-1).view(np.uint8).data)
          weight_map[name] = file
    if n > 1:
      total = sum(math.prod(s) for s in shapes.values()) * out_dtype.itemsize
      index = {"metadata": {"total_size": total}, "weight_map": weight_map}
      (tmp / INDEX).write_text(json.dumps(index, indent=2) + "\n")
  dst = Path(dst)
  return ([dst / CONFIG] + [dst / f for f in files] + ([dst / INDEX] if n > 1 else [])
          + tokenizer_files)

