"""`python -m llama_jax.convert`: checkpoints between HF, Meta, llama_jax and training runs.

The work is done by `llama_jax.interop.convert`; its Python API is re-exported here
(`load_hf`, `load_model`, `load_config`, `load_params`, `save_converted`, `convert`, `read`).
This module is the command line only (`core.cli` runs `PROGRAM`).
"""
from __future__ import annotations

import time
from pathlib import Path

from llama_jax.core import cli
from llama_jax.interop.convert import (  # noqa: F401  (the documented Python API)
  SOURCES,
  TARGETS,
  CheckpointError,
  convert,
  load_config,
  load_hf,
  load_model,
  load_params,
  parse_size,
  read,
  save_converted,
)

USAGE = """\
python -m llama_jax.convert --from=FORMAT --src=DIR --dst=DIR [--to=FORMAT] [options]

Converts model weights between formats: hf (a transformers LlamaForCausalLM directory), meta
(params.json + consolidated.*.pth), llama_jax (what training, generation and evaluation load)
and workdir (a training run: its newest checkpoint), and a run's adapter to peft (a directory
peft.PeftModel.from_pretrained loads onto the HF export of the base). The tokenizer.model of the
source, or --tokenizer, goes along; an HF export also gets the files transformers.AutoTokenizer
reads.

  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-7b-hf --dst=ckpt/llama2_7b
  python -m llama_jax.convert --from=meta --to=llama_jax --src=llama-2-13b --dst=ckpt/llama2_13b
  python -m llama_jax.convert --from=workdir --to=hf --src=runs/tiny --dst=export/tiny
  python -m llama_jax.convert --from=llama_jax --to=hf --src=ckpt/run1 --dst=export/run1 \\
      --dtype=bfloat16 --max_shard_size=5GB
  python -m llama_jax.convert --from=hf --to=hf --src=Llama-2-7b-hf --dst=export/dcis_64k \
      --rope_json=runs/dcis_search/rope.json    # searched RoPE factors into an HF config
  python -m llama_jax.convert --from=workdir --to=peft --src=runs/lora --dst=export/lora_adapter
  python -m llama_jax.convert --from=workdir --to=hf --merge_adapters --src=runs/lora \
      --dst=export/lora_merged

The destination is written atomically: a failed conversion leaves nothing there."""


def _size(path: Path) -> int:
  if path.is_file():
    return path.stat().st_size
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _rope_fields(text: str) -> dict | None:
  from llama_jax.core.errors import UsageError
  from llama_jax.rope.config import read_json
  if not text:
    return None
  try:
    return read_json(text)
  except ValueError as e:
    raise UsageError(str(e)) from None


def define_flags(flag_values=None):
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_enum("from", None, SOURCES, "Source checkpoint format.", flag_values=fv)
  flags.DEFINE_enum("to", "llama_jax", TARGETS, "Target checkpoint format.", flag_values=fv)
  flags.DEFINE_string("src", None, "Source checkpoint directory.", flag_values=fv)
  flags.DEFINE_string("dst", None, "Destination directory (must not exist unless --overwrite).",
                      flag_values=fv)
  flags.DEFINE_enum("dtype", None, ("float32", "bfloat16", "float16"),
                    "Parameter dtype of the result (default: as stored in the source).",
                    flag_values=fv)
  flags.DEFINE_bool("overwrite", False, "Replace an existing destination (atomically).",
                    flag_values=fv)
  flags.DEFINE_string("max_shard_size", "5GB", "Shard size limit of an HF export, e.g. 2GB.",
                      flag_values=fv)
  flags.DEFINE_integer("max_position_embeddings", None, "Context length of a Meta checkpoint "
                       "whose params.json has no max_seq_len.", lower_bound=1, flag_values=fv)
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model to keep with the result "
                      "(default: the source's tokenizer.model, if it has one).", flag_values=fv)
  flags.DEFINE_bool("merge_adapters", False, "Fold a training run's LoRA into the base weights "
                    "(--to=hf or llama_jax).", flag_values=fv)
  flags.DEFINE_string("rope_json", "", "RoPE fields that replace the source's in the result "
                      "(a JSON file such as a search's rope.json, or a JSON object).",
                      flag_values=fv)
  flags.mark_flags_as_required(["from", "src", "dst"], flag_values=fv)


def main(argv, flag_values=None):
  from absl import flags

  from llama_jax.core.errors import UsageError
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  start = time.time()
  try:
    shard_bytes = parse_size(f.max_shard_size)
  except CheckpointError as e:
    raise UsageError(str(e)) from None
  cfg, written = convert(f.src, f.dst, f["from"].value, f.to, dtype=f.dtype,
                         overwrite=f.overwrite, max_shard_bytes=shard_bytes,
                         max_position_embeddings=f.max_position_embeddings,
                         tokenizer=f.tokenizer, merge_adapters=f.merge_adapters,
                         rope=_rope_fields(f.rope_json))
  print(f"converted {f['from'].value} {f.src} -> {f.to} {Path(f.dst).absolute()} in "
        f"{time.time() - start:.1f} s")
  print(f"  model: {cfg.n_layers} layers, d_model {cfg.d_model}, heads {cfg.n_heads}/"
        f"{cfg.n_kv_heads}, head_dim {cfg.head_dim}, ffn {cfg.ffn_dim}, vocab {cfg.vocab_size}, "
        f"rope {cfg.rope.rope_type}, {cfg.num_params() / 1e9:.3f}B parameters, {cfg.param_dtype}")
  for path in written:
    print(f"  wrote {path.name}{'/' if path.is_dir() else ''}  {_size(path) / 1e6:,.1f} MB")
  if not any(p.name == "tokenizer.model" for p in written):
    print("  no tokenizer: the source keeps no tokenizer.model; pass --tokenizer=<.model> to "
          "include one" + (" (transformers pipelines need it)" if f.to == "hf" else ""))


PROGRAM = cli.Program("convert", USAGE, define_flags, main)

if __name__ == "__main__":
  cli.run(PROGRAM)
