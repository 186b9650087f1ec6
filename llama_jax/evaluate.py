r"""Long-context evaluation of a converted checkpoint: `python -m llama_jax.evaluate`.

  # sliding-window perplexity (window = each length, stride 256) on local text files
  python -m llama_jax.evaluate --checkpoint=ckpt/llama2_7b --tokenizer=tokenizer.model \
      --task=perplexity --files='data/govreport/*.txt' --lengths=2048,4096,8192 --stride=256 \
      --out=results/
  # ... or on a TFDS dataset prepared as ArrayRecord (read in place, no TensorFlow)
  python -m llama_jax.evaluate ... --dataset=pg19 --split=test --tfds_data_dir=~/tfds \
      --min_tokens=8192 --max_documents=50
  # the same model with YaRN s=4 applied at inference, truncated documents (one window each)
  python -m llama_jax.evaluate ... --task=perplexity --truncate --rope_type=yarn --factor=4 \
      --original_max_position_embeddings=4096 --compare=results/perplexity_llama2_7b.json
  # passkey retrieval on a lengths x depths grid
  python -m llama_jax.evaluate ... --task=passkey --lengths=4096,8192 --depths=0,0.5,1 --trials=10
  # one plot from several runs
  python -m llama_jax.evaluate --task=plot --results='results/perplexity_*.json' --out=results/

Each run writes `<task>_<label>.json` (the options, the RoPE used and the numbers) and PNGs:
`perplexity.png` (this run plus any --compare runs, one line each) or `passkey_<label>.png`.
RoPE flags override the checkpoint's rope: a new --rope_type starts from that type's defaults
(keeping rope_theta), otherwise the given fields replace the checkpoint's. The protocols are in
`llama_jax/evals/perplexity.py` and `passkey.py`.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import re
from pathlib import Path
from typing import Any, Sequence

from llama_jax.core import files
from llama_jax.evals import passkey, perplexity, plots
from llama_jax.rope import RopeConfig

TASKS = ("perplexity", "passkey", "plot")
# RoPE fields settable by flag (the rest, e.g. short/long factors, through --rope_json).
ROPE_FLAGS = ("rope_type", "rope_theta", "factor", "original_max_position_embeddings",
              "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim",
              "low_freq_factor", "high_freq_factor")


@dataclasses.dataclass
class Options:
  task: str
  out: str
  checkpoint: str = ""
  tokenizer: str = ""
  files: str = ""  # glob of UTF-8 text files, one document each (perplexity)
  dataset: str = ""  # or a prepared TFDS dataset (ArrayRecord), e.g. pg19 (perplexity)
  split: str = "test"
  tfds_data_dir: str = ""
  text_key: str = "text"
  lengths: Sequence[int] = ()
  stride: int = 256
  truncate: bool = False
  batch_size: int = 1
  min_tokens: int = 0  # drop documents shorter than this (perplexity)
  max_documents: int = 0  # 0 = all
  depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
  trials: int = 10
  seed: int = 0
  garbage_step: int = 128  # passkey garbage granularity, characters
  pad_multiple: int = 64  # passkey prompts share compilations within this many tokens
  rope: dict[str, Any] = dataclasses.field(default_factory=dict)  # RoPE overrides
  dtype: str = ""  # '' = the checkpoint's
  attention: str = ""  # '' = the checkpoint's; 'chunked' for long windows on small memory
  label: str = ""
  results: Sequence[str] = ()  # task=plot: result JSONs (paths or globs)
  compare: Sequence[str] = ()  # task=perplexity: earlier runs to draw in the same plot


def rope_overrides(base: RopeConfig, changes: dict[str, Any]) -> RopeConfig:
  """The checkpoint's RoPE with `changes` applied (a new rope_type starts from its defaults)."""
  unknown = sorted(set(changes) - set(RopeConfig.__dataclass_fields__))
  if unknown:
    raise ValueError(f"unknown RoPE field(s) {unknown}; allowed: "
                     f"{sorted(RopeConfig.__dataclass_fields__)}")
  if not changes:
    return base
  if changes.get("rope_type", base.rope_type) != base.rope_type:
    base = RopeConfig(rope_type=changes["rope_type"], rope_theta=base.rope_theta,
                      max_position_embeddings=base.max_position_embeddings)
  return base.replace(**changes)


def _slug(text: str) -> str:
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "run"


def _default_label(opts: Options, rope: RopeConfig) -> str:
  name = Path(opts.checkpoint.rstrip("/")).name or "model"
  if not opts.rope:
    return name
  parts = [rope.rope_type] + [f"{k}={v}" for k, v in opts.rope.items() if k != "rope_type"]
  return f"{name} {' '.join(parts)}"


def _expand(patterns: Sequence[str]) -> list[str]:
  paths = []
  for pattern in patterns:
    found = sorted(glob.glob(pattern))
    if not found:
      raise FileNotFoundError(f"no result file matches {pattern!r}")
    paths += found
  return paths


def _tokenize_documents(named_texts, tokenizer, min_tokens: int, max_documents: int,
                        where: str) -> tuple[list[str], list[list[int]]]:
  names, docs, seen = [], [], 0
  for name, text in named_texts:
    seen += 1
    tokens = tokenizer.encode(text, bos=False, eos=False)
    if len(tokens) >= max(1, min_tokens):
      names.append(name)
      docs.append(tokens)
      if max_documents and len(docs) == max_documents:
        break
  if not docs:
    raise ValueError(f"none of the {seen} documents of {where} has at least "
                     f"{max(1, min_tokens)} tokens (--min_tokens={min_tokens})")
  return names, docs


def load_documents(pattern: str, tokenizer, min_tokens: int = 0, max_documents: int = 0
                   ) -> tuple[list[str], list[list[int]]]:
  """(paths, token lists without BOS/EOS) of the UTF-8 files matching `pattern`, sorted by path;
  documents shorter than `min_tokens` are skipped, at most `max_documents` are kept."""
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
  if not paths:
    raise FileNotFoundError(f"--files={pattern!r} matches no file")

  def texts():
    for path in paths:
      try:
        yield path, Path(path).read_text(encoding="utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e}); --files must select text files"
                         ) from None

  return _tokenize_documents(texts(), tokenizer, min_tokens, max_documents, repr(pattern))


def load_tfds_documents(name: str, split: str, data_dir: str, text_key: str, tokenizer,
                        min_tokens: int = 0, max_documents: int = 0
                        ) -> tuple[list[str], list[list[int]]]:
  """Like `load_documents` for a prepared TFDS split read in place (ArrayRecord, no TensorFlow),
  in the split's order."""
  import numpy as np
  from llama_jax.data import sources
  source, size, _ = sources.open_tfds(name, data_dir, split)
  where = f"--dataset={name!r} split {split!r}"
  read = sources.record_reader(source, text_key, where)

  def texts(chunk=64):
    for start in range(0, size, chunk):
      idx = np.arange(start, min(start + chunk, size))
      yield from zip((f"{name}:{split}[{i}]" for i in idx), read(idx))

  return _tokenize_documents(texts(), tokenizer, min_tokens, max_documents, where)


def _load(opts: Options):
  """(model, tokenizer, rope) with the RoPE and dtype overrides applied."""
  from llama_jax.interop import convert
  from llama_jax.data import tokenizer as tokenizer_lib
  for name in ("checkpoint", "tokenizer"):
    if not getattr(opts, name):
      raise ValueError(f"--{name} is required for --task={opts.task}")
  cfg = convert.load_config(opts.checkpoint)
  rope = rope_overrides(cfg.rope, opts.rope)
  overrides = {"rope": rope}
  if opts.attention:
    overrides["attention"] = opts.attention
  cfg.replace(**overrides)  # validates (names the rope field and value) before loading weights
  tok = tokenizer_lib.Tokenizer(opts.tokenizer)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size)
  model = convert.load_model(opts.checkpoint, dtype=opts.dtype or None, **overrides)
  return model, tok, rope


def _check_lengths(opts: Options):
  if not opts.lengths or min(opts.lengths) < 2:
    raise ValueError(f"--lengths={list(opts.lengths)} must list context lengths >= 2")


def run_perplexity(opts: Options) -> dict[str, Path]:
  _check_lengths(opts)
  if bool(opts.files) == bool(opts.dataset):
    raise ValueError("--task=perplexity needs exactly one of --files (a glob of UTF-8 text "
                     "files) and --dataset (a prepared TFDS dataset such as pg19)")
  compare = [files.read_json(p) for p in _expand(opts.compare)]  # fail before the long part
  model, tok, rope = _load(opts)
  if opts.dataset:
    paths, docs = load_tfds_documents(opts.dataset, opts.split, opts.tfds_data_dir,
                                      opts.text_key, tok, opts.min_tokens, opts.max_documents)
  else:
    paths, docs = load_documents(opts.files, tok, opts.min_tokens, opts.max_documents)
  label = opts.label or _default_label(opts, rope)
  print(f"perplexity of {label}: {len(docs)} documents, {sum(map(len, docs))} tokens", flush=True)
  results = perplexity.evaluate(
      model, docs, opts.lengths, stride=opts.stride, bos_id=tok.bos_id, truncate=opts.truncate,
      batch_size=opts.batch_size, log=lambda s: print(s, flush=True))
  data = {"task": "perplexity", "label": label, "checkpoint": opts.checkpoint,
          "rope": rope.to_dict(), "mode": "truncated" if opts.truncate else "sliding",
          "stride": (None if opts.truncate else opts.stride), "dtype": opts.dtype or "checkpoint",
          "source": ({"dataset": opts.dataset, "split": opts.split} if opts.dataset
                     else {"files": opts.files}),
          "documents": paths, "document_tokens": [len(d) for d in docs], "results": results}
  out = Path(opts.out)
  written = {"json": files.write_json(out / f"perplexity_{_slug(label)}.json", data)}
  written["png"] = plots.save(plots.perplexity_figure(compare + [data]), out / "perplexity.png")
  return written


def run_passkey(opts: Options) -> dict[str, Path]:
  from llama_jax.inference import generate as generate_lib
  _check_lengths(opts)
  if not opts.depths or not all(0 <= d <= 1 for d in opts.depths):
    raise ValueError(f"--depths={list(opts.depths)} must list fractions within [0, 1]")
  model, tok, rope = _load(opts)
  label = opts.label or _default_label(opts, rope)

  def generate_fn(prompts):
    out = []
    for start in range(0, len(prompts), opts.batch_size):
      out += generate_lib.generate(model, prompts[start:start + opts.batch_size],
                                   passkey.MAX_NEW_TOKENS, eos_id=tok.eos_id,
                                   pad_multiple=opts.pad_multiple)
    return out

  data = passkey.evaluate(generate_fn, tok, opts.lengths, opts.depths, opts.trials,
                          seed=opts.seed, step=opts.garbage_step,
                          log=lambda s: print(s, flush=True))
  data = {"task": "passkey", "label": label, "checkpoint": opts.checkpoint,
          "rope": rope.to_dict(), "dtype": opts.dtype or "checkpoint",
          **{k: v for k, v in data.items() if k != "task"}}
  out = Path(opts.out)
  written = {"json": files.write_json(out / f"passkey_{_slug(label)}.json", data)}
  written["png"] = plots.save(plots.passkey_figure(data), out / f"passkey_{_slug(label)}.png")
  return written


def run_plot(opts: Options) -> dict[str, Path]:
  runs = [files.read_json(p) for p in _expand(opts.results)]
  if not runs:
    raise ValueError("--task=plot needs --results (result JSON paths or globs)")
  out, written = Path(opts.out), {}
  ppl = [r for r in runs if r.get("task") == "perplexity"]
  if ppl:
    written["perplexity"] = plots.save(plots.perplexity_figure(ppl), out / "perplexity.png")
  for r in runs:
    if r.get("task") == "passkey":
      name = f"passkey_{_slug(r.get('label', 'run'))}.png"
      written[name] = plots.save(plots.passkey_figure(r), out / name)
  return written


def run(opts: Options) -> dict[str, Path]:
  """Runs one task; returns the files written."""
  if opts.task not in TASKS:
    raise ValueError(f"--task={opts.task!r}; allowed: {list(TASKS)}")
  if not opts.out:
    raise ValueError("--out (the results directory) is required")
  return {"perplexity": run_perplexity, "passkey": run_passkey, "plot": run_plot}[opts.task](opts)


# ------------------------------------------------------------------------------------- CLI
def _csv(text: str, kind) -> list:
  try:
    return [kind(x) for x in text.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"cannot read {text!r} as a comma-separated list of {kind.__name__}") from None


def options_from_flags(f) -> Options:
  rope = dict(json.loads(Path(f.rope_json).read_text() if Path(f.rope_json).is_file()
                         else f.rope_json)) if f.rope_json else {}
  for name in ROPE_FLAGS:
    value = getattr(f, name)
    if value is not None:
      rope[name] = value
  return Options(
      task=f.task, out=f.out, checkpoint=f.checkpoint or "", tokenizer=f.tokenizer or "",
      files=f.files, dataset=f.dataset, split=f.split, tfds_data_dir=f.tfds_data_dir,
      text_key=f.text_key, lengths=_csv(f.lengths, int), stride=f.stride, truncate=f.truncate,
      batch_size=f.batch_size, min_tokens=f.min_tokens, max_documents=f.max_documents,
      depths=_csv(f.depths, float), trials=f.trials, seed=f.seed, garbage_step=f.garbage_step,
      pad_multiple=f.pad_multiple, rope=rope, dtype=f.dtype, attention=f.attention,
      label=f.label, results=_csv(f.results, str), compare=_csv(f.compare, str))


_FLAGS = (  # (kind, name, default, help)
    ("string", "out", None, "results directory (JSON + PNG)"),
    ("string", "checkpoint", None, "converted llama_jax checkpoint directory"),
    ("string", "tokenizer", None, "sentencepiece .model file"),
    ("string", "files", "", "perplexity: glob of UTF-8 text files, one document each"),
    ("string", "dataset", "", "perplexity: a prepared TFDS dataset, e.g. pg19"),
    ("string", "split", "test", "perplexity: the TFDS split"),
    ("string", "tfds_data_dir", "", "perplexity: where TFDS datasets live ('' = default)"),
    ("string", "text_key", "text", "perplexity: the TFDS feature holding the text"),
    ("string", "lengths", "", "comma-separated context lengths (tokens)"),
    ("integer", "stride", 256, "perplexity: sliding-window stride"),
    ("bool", "truncate", False, "perplexity: cut each document to one window"),
    ("integer", "batch_size", 1, "windows / prompts per model call"),
    ("integer", "min_tokens", 0, "perplexity: skip documents shorter than this"),
    ("integer", "max_documents", 0, "perplexity: use at most this many documents (0 = all)"),
    ("string", "depths", "0,0.25,0.5,0.75,1", "passkey: key depths in [0, 1]"),
    ("integer", "trials", 10, "passkey: random keys per length and depth"),
    ("integer", "seed", 0, "passkey: key seed"),
    ("integer", "garbage_step", 128, "passkey: garbage length granularity (characters)"),
    ("integer", "pad_multiple", 64, "passkey: pad prompts to a multiple of this"),
    ("string", "rope_json", "", "RoPE overrides as JSON (or a JSON file), HF field names"),
    ("string", "rope_type", None, "RoPE override: method"),
    *(("integer" if name == "original_max_position_embeddings" else "float", name, None,
       f"RoPE override: {name}") for name in ROPE_FLAGS[1:]),
    ("string", "dtype", "", "compute dtype override (float32 | bfloat16)"),
    ("string", "attention", "", "attention kernel override (xla | chunked | ...)"),
    ("string", "label", "", "name of this run in results and plots"),
    ("string", "results", "", "task=plot: comma-separated result JSONs or globs"),
    ("string", "compare", "", "task=perplexity: earlier result JSONs to plot alongside"),
)


def define_flags(flag_values=None):
  """Defines the CLI's flags on `flag_values` (default: absl's global flags)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_enum("task", None, list(TASKS), "what to run", flag_values=fv)
  for kind, name, default, help_text in _FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)
  flags.mark_flags_as_required(["task", "out"], flag_values=fv)


def main(argv, flag_values=None):
  """The CLI. `flag_values` defaults to absl's global flags (see `define_flags`)."""
  from absl import flags
  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  for name, path in run(options_from_flags(f)).items():
    print(f"wrote {path}")


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
