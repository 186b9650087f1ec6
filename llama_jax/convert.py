"""Checkpoint conversion between HF, Meta and llama_jax: `python -m llama_jax.convert`.

  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-7b-hf --dst=ckpt/llama2_7b
  python -m llama_jax.convert --from=meta --to=llama_jax --src=llama-2-13b --dst=ckpt/llama2_13b
  python -m llama_jax.convert --from=llama_jax --to=hf --src=ckpt/run1 --dst=export/run1 \
      --dtype=bfloat16 --max_shard_size=5GB
  python -m llama_jax.convert --from=workdir --to=hf --src=runs/tiny --dst=export/tiny

Every conversion is a read (any format → ModelConfig + nested NumPy parameter tree, streamed
one tensor at a time into preallocated stacked arrays) followed by a write (the tree → a format,
again one tensor at a time), so peak memory is about one copy of the model. Formats:
- `llama_jax`: the converted checkpoint (model_config.json + orbax params/), `checkpoint_io.py`;
- `hf`: config.json + safetensors (single or sharded with an index), `hf_format.py`;
- `meta`: params.json + consolidated.NN.pth model-parallel shards (read only), `meta_format.py`;
- `workdir`: a training run's directory, its newest checkpoint (read only), `workdir.py`.
Writes are atomic (a temporary directory next to the destination, renamed at the end): a failed
conversion leaves nothing at the destination, and an existing destination is refused unless
`--overwrite`, then replaced whole.

Python API, re-exported here: `load_config`, `load_params`, `load_model`, `save_converted` for
converted checkpoints, `load_hf(path)` for an HF directory, `convert(...)` for everything else.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

import jax
import numpy as np

from llama_jax.checkpoint_io import (CheckpointError, lazy_params, load_config, load_model,
                                     load_params, save_converted)
from llama_jax.model_config import ModelConfig

__all__ = ["CheckpointError", "convert", "load_config", "load_hf", "load_model", "load_params",
           "read", "save_converted"]

SOURCES = ("hf", "meta", "llama_jax", "workdir")
TARGETS = ("llama_jax", "hf")


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
    from llama_jax import hf_format
    return hf_format.read_hf(src, dtype)
  if src_format == "meta":
    from llama_jax import meta_format
    return meta_format.read_meta(src, dtype, max_position_embeddings)
  if src_format == "workdir":
    from llama_jax import workdir as workdir_lib
    if not workdir_lib.is_workdir(src):
      raise CheckpointError(f"source {src} is not a training workdir (no config.json)")
    cfg = workdir_lib.load_model_config(src)
    params, _ = workdir_lib.latest_params(src)
    params = jax.tree.map(np.asarray, jax.device_get(params))
  else:
    cfg = load_config(src)
    params = None
  if dtype is not None:
    cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
    if params is not None:
      params = jax.tree.map(lambda x: x.astype(dtype), params)
  return cfg, (load_params(src, cfg) if params is None else params)


def convert(src: str | os.PathLike, dst: str | os.PathLike, src_format: str,
            dst_format: str = "llama_jax", *, dtype: str | None = None, overwrite: bool = False,
            max_shard_bytes: int | None = None,
            max_position_embeddings: int | None = None) -> tuple[ModelConfig, list[Path]]:
  """Converts a checkpoint directory; returns the config and the top-level paths written.

  dtype: parameter dtype of the result (default: as stored in the source). max_shard_bytes:
  shard size limit of an HF export. max_position_embeddings: context length of a Meta
  checkpoint whose params.json has no max_seq_len.
  """
  if dst_format not in TARGETS:
    raise CheckpointError(f"target format {dst_format!r} is unknown; allowed: {list(TARGETS)}")
  src, dst = Path(src).absolute(), Path(dst).absolute()
  # Refuse before the (possibly long) read; the writers check again when they rename.
  if dst.exists() and not overwrite:
    raise CheckpointError(f"destination {dst} already exists; pass --overwrite to replace it")
  if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
    raise CheckpointError(f"destination {dst} would overwrite or sit inside the source {src}")
  if src_format == "llama_jax" and dst_format == "hf":
    # Stream layer slices straight from the stored arrays instead of restoring the model.
    cfg = load_config(src)
    params = lazy_params(src, cfg)
    if params is None:
      cfg, params = read(src_format, src, dtype)
  else:
    cfg, params = read(src_format, src, dtype, max_position_embeddings)
  if dst_format == "llama_jax":
    save_converted(dst, cfg, params, overwrite=overwrite)
    return cfg, [dst / "model_config.json", dst / "params"]
  from llama_jax import hf_format
  kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
  return cfg, hf_format.write_hf(dst, cfg, params, dtype=dtype, overwrite=overwrite, **kwargs)


def load_hf(path: str | os.PathLike, dtype: str | None = None):
  """A `Llama` from an HF LlamaForCausalLM directory (config.json + safetensors).

  `model(input_ids)` with int input_ids [batch, seq] returns float32 logits [batch, seq, vocab].
  dtype: parameter and compute dtype (default: the checkpoint's dtype on disk).
  """
  from llama_jax import hf_format
  from llama_jax import model as model_lib
  cfg, params = hf_format.read_hf(path, dtype)
  return model_lib.from_params(cfg, params)


def parse_size(text: str) -> int:
  """'5GB' → 5e9, '500MiB' → 500·2^20, '123' → 123 bytes."""
  m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?)B?\s*", text.upper())
  if not m:
    raise CheckpointError(f"--max_shard_size={text!r}: expected e.g. 5GB, 500MiB or 123456")
  number, prefix, binary = m.groups()
  base = 1024 if binary else 1000
  return int(float(number) * base ** " KMGT".index(prefix or " "))


def _size(path: Path) -> int:
  if path.is_file():
    return path.stat().st_size
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _define_flags():
  # Defined only when run as a program, so importing this module (for load_model) never
  # collides with another CLI's flags.
  from absl import flags
  flags.DEFINE_enum("from", None, SOURCES, "Source checkpoint format.", required=True)
  flags.DEFINE_enum("to", "llama_jax", TARGETS, "Target checkpoint format.")
  flags.DEFINE_string("src", None, "Source checkpoint directory.", required=True)
  flags.DEFINE_string("dst", None, "Destination directory (must not exist unless --overwrite).",
                      required=True)
  flags.DEFINE_enum("dtype", None, ("float32", "bfloat16", "float16"),
                    "Parameter dtype of the result (default: as stored in the source).")
  flags.DEFINE_bool("overwrite", False, "Replace an existing destination (atomically).")
  flags.DEFINE_string("max_shard_size", "5GB", "Shard size limit of an HF export, e.g. 2GB.")
  flags.DEFINE_integer("max_position_embeddings", None,
                       "Context length of a Meta checkpoint whose params.json has no max_seq_len.")
  return flags.FLAGS


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  start = time.time()
  try:
    cfg, written = convert(f.src, f.dst, f["from"].value, f.to, dtype=f.dtype,
                           overwrite=f.overwrite, max_shard_bytes=parse_size(f.max_shard_size),
                           max_position_embeddings=f.max_position_embeddings)
  except CheckpointError as e:
    raise SystemExit(f"convert: error: {e}") from None
  print(f"converted {f['from'].value} {f.src} -> {f.to} {Path(f.dst).absolute()} in "
        f"{time.time() - start:.1f} s")
  print(f"  model: {cfg.n_layers} layers, d_model {cfg.d_model}, heads {cfg.n_heads}/"
        f"{cfg.n_kv_heads}, head_dim {cfg.head_dim}, ffn {cfg.ffn_dim}, vocab {cfg.vocab_size}, "
        f"rope {cfg.rope.rope_type}, {cfg.num_params() / 1e9:.3f}B parameters, {cfg.param_dtype}")
  for path in written:
    print(f"  wrote {path.name}{'/' if path.is_dir() else ''}  {_size(path) / 1e6:,.1f} MB")


if __name__ == "__main__":
  from absl import app
  _define_flags()
  app.run(main)
