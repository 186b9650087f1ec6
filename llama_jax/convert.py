"""`python -m llama_jax.convert`: checkpoints between HF, Meta, llama_jax and training runs.

  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-7b-hf --dst=ckpt/llama2_7b
  python -m llama_jax.convert --from=meta --to=llama_jax --src=llama-2-13b --dst=ckpt/llama2_13b
  python -m llama_jax.convert --from=llama_jax --to=hf --src=ckpt/run1 --dst=export/run1 \
      --dtype=bfloat16 --max_shard_size=5GB
  python -m llama_jax.convert --from=workdir --to=hf --src=runs/tiny --dst=export/tiny
  python -m llama_jax.convert --from=workdir --to=peft --src=runs/lora --dst=export/lora_adapter
  python -m llama_jax.convert --from=workdir --to=hf --merge_adapters --src=runs/lora \
      --dst=export/lora_merged

The work is done by `llama_jax.interop.convert`; its Python API is re-exported here
(`load_hf`, `load_model`, `load_config`, `load_params`, `save_converted`, `convert`, `read`).
"""
from __future__ import annotations

import time
from pathlib import Path

from llama_jax.core.errors import LlamaJaxError
from llama_jax.interop.convert import (  # noqa: F401  (the documented Python API)
    SOURCES, TARGETS, CheckpointError, convert, load_config, load_hf, load_model, load_params,
    parse_size, read, save_converted)


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
  flags.DEFINE_bool("merge_adapters", False,
                    "Fold a training run's LoRA into the base weights (--to=hf or llama_jax).")
  return flags.FLAGS


def main(argv):
  del argv
  from absl import flags
  f = flags.FLAGS
  start = time.time()
  try:
    cfg, written = convert(f.src, f.dst, f["from"].value, f.to, dtype=f.dtype,
                           overwrite=f.overwrite, max_shard_bytes=parse_size(f.max_shard_size),
                           max_position_embeddings=f.max_position_embeddings,
                           merge_adapters=f.merge_adapters)
  except LlamaJaxError as e:  # CheckpointError, and ConfigError of an adapter
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
