"""Reading weights from any source and writing them to any target format.

Sources: `hf` (config.json + safetensors, `interop.hf`), `meta` (params.json +
consolidated.NN.pth, `interop.meta`), `llama_jax` (a converted checkpoint:
model_config.json + orbax params/, `checkpoints.converted`) and `workdir` (a training run's
directory, its newest checkpoint, `training.run_reader`). Targets: `llama_jax`, `hf` and `peft`.

A training run with an adapter exports its adapter (`--to=peft`: a peft directory for LoRA and
prefix tuning, LLM-Adapters' format for series/parallel adapters, `interop/peft.py`), or, with
`merge_adapters`, its LoRA folded into the base weights as a plain model (`--to=hf` or
`llama_jax`); a plain export of an adapter run without merging is refused, not silently
dropped. `load_hf(base, adapter=peft_dir)` applies a peft / LLM-Adapters adapter to an HF model.

Every conversion is a read (any format → ModelConfig + nested NumPy parameter tree, streamed
one tensor at a time into preallocated stacked arrays) followed by a write (the tree → a format,
again one tensor at a time), so peak memory is about one copy of the model. Writes are atomic
(a temporary directory next to the destination, renamed at the end): a failed conversion leaves
nothing at the destination, and an existing destination is refused unless `overwrite`, then
replaced whole.

`load_config` / `load_model` accept a converted checkpoint or a training workdir, `load_hf` an HF
directory; `python -m llama_jax.convert` is the command line.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np

from llama_jax import adapters
from llama_jax.checkpoints import converted
from llama_jax.checkpoints.converted import lazy_params, load_params, save_converted
from llama_jax.checkpoints.manager import CHECKPOINTS_DIR
from llama_jax.core.errors import CheckpointError, ConfigError
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig
from llama_jax.rope import config as rope_config
from llama_jax.training import run_reader
from llama_jax.training import workdir as workdir_lib

__all__ = ["CheckpointError", "checkpoint_kind", "convert", "load_config", "load_hf",
           "load_model", "load_params", "read", "save_converted", "tokenizer_of"]

SOURCES = ("hf", "meta", "llama_jax", "workdir")
TARGETS = ("llama_jax", "hf", "peft")


def read(src_format: str, src: str | os.PathLike, dtype: str | None = None,
         max_position_embeddings: int | None = None) -> tuple[ModelConfig, dict]:
  """(ModelConfig, nested NumPy parameters) from a checkpoint directory of `src_format`."""
  if src_format not in SOURCES:
    raise CheckpointError(f"source format {src_format!r} is unknown; allowed: {list(SOURCES)}")
  if not Path(src).is_dir():
    raise CheckpointError(f"source {src} is not a directory")
  if max_position_embeddings is not None and src_format != "meta":
    raise CheckpointError("max_position_embeddings only applies to --from=meta (the other formats "
                          "record it in their config)")
  if src_format == "hf":
    from llama_jax.interop import hf as hf_format
    return hf_format.read_hf(src, dtype)
  if src_format == "meta":
    from llama_jax.interop import meta as meta_format
    return meta_format.read_meta(src, dtype, max_position_embeddings)
  if src_format == "workdir":
    if not workdir_lib.is_workdir(src):
      raise CheckpointError(f"source {src} is not a training workdir (no config.json)")
    cfg = run_reader.model_config(src)
    params, _ = run_reader.latest_params(src)
    params = jax.tree.map(np.asarray, jax.device_get(params))
  else:
    cfg = converted.load_config(src)
    params = None
  if dtype is not None:
    cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
    if params is not None:
      params = jax.tree.map(lambda x: x.astype(dtype), params)
  return cfg, (load_params(src, cfg) if params is None else params)


def source_tokenizer(src: str | os.PathLike, src_format: str) -> str | None:
  """The tokenizer.model a conversion source keeps (a workdir's, a converted checkpoint's, the
  one in an HF or Meta directory), or None."""
  if src_format in ("workdir", "llama_jax"):
    return tokenizer_of(src)
  from llama_jax.interop import hf_tokenizer
  return hf_tokenizer.find_tokenizer(src, src_format)


def _run_adapter(src_format: str, src) -> spec_lib.ModelSpec | None:
  """The spec of a training run that has an adapter (None for anything else)."""
  if src_format != "workdir" or not workdir_lib.is_workdir(src):
    return None
  spec = run_reader.load_training_config(src).spec
  return spec if spec.adapter is not None else None


def convert(src: str | os.PathLike, dst: str | os.PathLike, src_format: str,
            dst_format: str = "llama_jax", *, dtype: str | None = None, overwrite: bool = False,
            max_shard_bytes: int | None = None, max_position_embeddings: int | None = None,
            tokenizer: str | os.PathLike | None = None,
            merge_adapters: bool = False,
            rope: Mapping[str, Any] | None = None) -> tuple[ModelConfig, list[Path]]:
  """Converts a checkpoint directory; returns the config and the top-level paths written.

  dtype: parameter dtype of the result (default: as stored in the source). max_shard_bytes:
  shard size limit of an HF export. max_position_embeddings: context length of a Meta
  checkpoint whose params.json has no max_seq_len. tokenizer: the SentencePiece model to keep
  with the result (default: the source's, `source_tokenizer`); an HF export writes it with the
  files `transformers.AutoTokenizer` reads. merge_adapters: fold a training run's LoRA into the
  base weights (`--to=hf` / `llama_jax`). rope: RoPE fields (HF names, e.g. a search's
  rope.json) that replace the source's in the result, so searched factors travel to HF.
  """
  if dst_format not in TARGETS:
    raise CheckpointError(f"target format {dst_format!r} is unknown; allowed: {list(TARGETS)}")
  src, dst = Path(src).absolute(), Path(dst).absolute()
  # Refuse before the (possibly long) read; the writers check again when they rename.
  if dst.exists() and not overwrite:
    raise CheckpointError(f"destination {dst} already exists; pass --overwrite to replace it")
  if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
    raise CheckpointError(f"destination {dst} would overwrite or sit inside the source {src}")
  if not dst.parent.is_dir():
    raise CheckpointError(f"destination's parent directory {dst.parent} " + (
        "is not a directory" if dst.parent.exists() else "does not exist; create it first"))
  if not os.access(dst.parent, os.W_OK | os.X_OK):
    raise CheckpointError(f"destination's parent directory {dst.parent} is not writable (a "
                          "read-only file system or no permission)")
  if not src.is_dir():
    raise CheckpointError(f"source {src} is not a directory" + (
        "" if src.exists() else " (it does not exist)"))
  if tokenizer is None:
    tokenizer = source_tokenizer(src, src_format)
  if tokenizer is not None and not Path(os.path.expanduser(os.fspath(tokenizer))).is_file():
    raise CheckpointError(f"tokenizer {os.fspath(tokenizer)} does not exist; give a "
                          "SentencePiece .model file")
  if rope:
    if dst_format == "peft":
      raise CheckpointError("--rope_json changes the base model's config; a peft adapter "
                            "carries none (export the base with --to=hf --rope_json instead)")
    _with_rope(_source_config(src, src_format), rope)  # refuse a bad rope.json before reading
  run_spec = _run_adapter(src_format, src)
  if run_spec is None and (dst_format == "peft" or merge_adapters):
    raise CheckpointError(
        f"{'--to=peft' if dst_format == 'peft' else '--merge_adapters'} needs a training run "
        f"with an adapter (--from=workdir, config adapter.name set); {src} is not one")
  if run_spec is not None:
    return _convert_adapter_run(run_spec, src, dst, dst_format, dtype=dtype,
                                overwrite=overwrite, max_shard_bytes=max_shard_bytes,
                                merge=merge_adapters, tokenizer=tokenizer, rope=rope)
  if src_format == "llama_jax" and dst_format == "hf":
    # Stream layer slices straight from the stored arrays instead of restoring the model.
    cfg = converted.load_config(src)
    params = lazy_params(src, cfg)
    if params is None:
      cfg, params = read(src_format, src, dtype)
  else:
    cfg, params = read(src_format, src, dtype, max_position_embeddings)
  cfg = _with_rope(cfg, rope)
  return cfg, _write(dst, dst_format, cfg, params, dtype=dtype, overwrite=overwrite,
                     max_shard_bytes=max_shard_bytes, tokenizer=tokenizer)


def _write(dst: Path, dst_format: str, cfg: ModelConfig, params, *, dtype, overwrite,
           max_shard_bytes, tokenizer) -> list[Path]:
  """Writes a model as a converted checkpoint or an HF directory; the top-level paths written."""
  if dst_format == "llama_jax":
    save_converted(dst, cfg, params, overwrite=overwrite, tokenizer=tokenizer)
    return [dst / converted.MODEL_CONFIG_FILE, dst / converted.PARAMS_DIR] + (
        [dst / converted.TOKENIZER_FILE] if tokenizer is not None else [])
  from llama_jax.interop import hf as hf_format
  kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
  return hf_format.write_hf(dst, cfg, params, dtype=dtype, overwrite=overwrite,
                            tokenizer=tokenizer, **kwargs)


def _source_config(src: Path, src_format: str) -> ModelConfig | None:
  """The source's ModelConfig where reading it costs nothing (None for Meta checkpoints)."""
  if src_format == "hf":
    from llama_jax.interop import hf as hf_format
    return hf_format.read_config(src)
  if src_format in ("llama_jax", "workdir"):
    return load_config(src)
  return None


def _with_rope(cfg: ModelConfig | None, rope: Mapping[str, Any] | None) -> ModelConfig | None:
  """`cfg` with the RoPE fields `rope` applied and validated (ConfigError names the field)."""
  if not rope or cfg is None:
    return cfg
  try:
    return cfg.replace(rope=rope_config.apply_overrides(cfg.rope, rope))
  except (TypeError, ValueError) as e:
    raise ConfigError(f"--rope_json does not fit the model: {e}") from None


def _convert_adapter_run(spec, src: Path, dst: Path, dst_format: str, *, dtype, overwrite,
                         max_shard_bytes, merge: bool,
                         tokenizer=None, rope=None) -> tuple[ModelConfig, list[Path]]:
  """Exports a training run with an adapter: the adapter (peft) or the merged model."""
  name = spec.adapter.name
  if dst_format == "peft":
    if merge:
      raise CheckpointError("--merge_adapters writes a plain model: use it with --to=hf or "
                            "--to=llama_jax, not --to=peft")
    from llama_jax.interop import peft as peft_format
    base = workdir_lib.read_config(src).init_from
    params, _ = run_reader.latest_params(src)
    params = jax.tree.map(np.asarray, jax.device_get(spec.saved_params(params)))
    return spec.config, peft_format.write_adapter(dst, spec, params, base_model=base,
                                                  overwrite=overwrite)
  if not merge:
    raise CheckpointError(
        f"{src} is a run with adapter {name!r}: export the adapter with --to=peft (it loads "
        "onto the HF export of its base), or pass --merge_adapters to fold it into the base "
        f"weights ({[a.name for a in adapters.registry.ADAPTERS.entries() if a.mergeable]} "
        "only)")
  if not spec.adapter.mergeable:
    spec.adapter.merge({})  # raises the adapter's own explanation
  params, _ = run_reader.latest_params(src)
  params = jax.tree.map(np.asarray, jax.device_get(spec.adapter.merge(params)))
  cfg = _with_rope(spec.config, rope)
  if dtype is not None:
    cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
  params = jax.tree.map(lambda x: x.astype(converted.np_dtype(cfg.param_dtype)), params)
  return cfg, _write(dst, dst_format, cfg, params, dtype=dtype, overwrite=overwrite,
                     max_shard_bytes=max_shard_bytes, tokenizer=tokenizer)


def load_hf(path: str | os.PathLike, dtype: str | None = None,
            adapter: str | os.PathLike | None = None):
  """A `Llama` from an HF LlamaForCausalLM directory (config.json + safetensors).

  `model(input_ids)` with int input_ids [batch, seq] returns float32 logits [batch, seq, vocab].
  dtype: parameter and compute dtype (default: the checkpoint's dtype on disk).
  adapter: a peft (LoRA, prefix tuning) or LLM-Adapters (bottleneck) adapter directory to
    apply; its parameters stay float32.
  """
  from llama_jax.interop import hf as hf_format
  cfg, params = hf_format.read_hf(path, dtype)
  if adapter is None:
    return spec_lib.from_params(cfg, params)
  from llama_jax.interop import peft as peft_format
  found, adapter_params = peft_format.read_adapter(adapter, cfg)
  return spec_lib.from_params(cfg, spec_lib.combine(params, adapter_params), adapter=found)


def checkpoint_kind(path: str | os.PathLike) -> str:
  """'converted' or 'workdir' for a directory `load_model` can read; otherwise a
  CheckpointError that says what `path` is and what to run instead."""
  p = Path(os.path.expanduser(os.fspath(path)))
  make = ("make one with `python -m llama_jax.convert --from=hf|meta --to=llama_jax "
          "--src=<dir> --dst=<dir>`, or give a training workdir")
  if not p.exists():
    raise CheckpointError(f"checkpoint {os.fspath(path)} does not exist; {make}")
  if not p.is_dir():
    raise CheckpointError(f"checkpoint {os.fspath(path)} is a file, not a checkpoint directory; "
                          f"{make}")
  if converted.is_converted(p):
    return "converted"
  if workdir_lib.is_workdir(p):
    steps = p / CHECKPOINTS_DIR
    if not steps.is_dir() or not any(c.name.isdigit() for c in steps.iterdir()):
      raise CheckpointError(f"{os.fspath(path)} is a training workdir without checkpoints yet "
                            "(train it first, or wait for its first checkpoint_every)")
    return "workdir"
  if (p / "config.json").is_file():  # not a training config (is_workdir said so): HF's
    raise CheckpointError(
        f"{os.fspath(path)} looks like an HF model directory, not a llama_jax checkpoint; "
        f"convert it "
        f"first: python -m llama_jax.convert --from=hf --to=llama_jax --src={os.fspath(path)} "
        f"--dst=<dir>")
  if (p / "params.json").is_file():
    raise CheckpointError(
        f"{os.fspath(path)} is a Meta checkpoint directory; convert it first: python -m "
        f"llama_jax.convert --from=meta --to=llama_jax --src={os.fspath(path)} --dst=<dir>")
  if p.name == CHECKPOINTS_DIR and workdir_lib.is_workdir(p.parent):
    raise CheckpointError(f"{os.fspath(path)} is the checkpoints/ folder of a training run; give "
                          f"the run's workdir itself: {p.parent}")
  raise CheckpointError(
      f"{os.fspath(path)} is neither a converted checkpoint (model_config.json + params/) nor a "
      f"training workdir (config.json + checkpoints/); {make}")


def tokenizer_of(path: str | os.PathLike) -> str | None:
  """The tokenizer.model kept with a training workdir or a converted checkpoint, if any."""
  file = Path(os.path.expanduser(os.fspath(path))) / workdir_lib.TOKENIZER_FILE
  return str(file) if file.is_file() else None


def load_config(path: str | os.PathLike) -> ModelConfig:
  """The ModelConfig of a converted checkpoint or of a training workdir."""
  if checkpoint_kind(path) == "workdir":
    return run_reader.model_config(path)
  return converted.load_config(path)


def load_model(path: str | os.PathLike, dtype: str | None = None, **cfg_overrides):
  """A `Llama` from a converted checkpoint or a training workdir (its newest checkpoint), its
  parameters restored onto the default device.

  dtype: parameter and compute dtype ('float32', 'bfloat16', 'float16'); default: the
    checkpoint's. cfg_overrides: other ModelConfig fields that do not change shapes (e.g.
    attention='chunked', remat='full', scan_layers=False, a different rope=...).
  """
  cfg = load_config(path)
  if dtype is not None:
    cfg_overrides = {"param_dtype": dtype, "dtype": dtype, **cfg_overrides}
  if cfg_overrides:
    cfg = cfg.replace(**cfg_overrides)
  if checkpoint_kind(path) == "workdir":
    # A training run: its newest checkpoint (with its adapter, if it trained one).
    adapter = run_reader.load_training_config(path).spec.adapter
    params, _ = run_reader.latest_params(path)
    return spec_lib.from_params(cfg, params, adapter=adapter)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return spec_lib.from_params(cfg, load_params(path, cfg, shardings=device))


def parse_size(text: str) -> int:
  """'5GB' → 5e9, '500MiB' → 500·2^20, '123' → 123 bytes."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", text.upper())
  if not m:
    raise CheckpointError(f"--max_shard_size={text!r}: expected e.g. 5GB, 500MiB or 123456")
  number, prefix, binary = m.groups()
  base = 1024 if binary else 1000
  return int(float(number) * base ** " KMGT".index(prefix or " "))
