r"""`python -m llama_jax.evaluate`: one evaluation of a checkpoint or a training run.

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
  # factors found by a RoPE search (python -m llama_jax.search), or training-free Self-Extend
  python -m llama_jax.evaluate ... --task=perplexity --rope_json=runs/dcis/rope.json
  python -m llama_jax.evaluate ... --task=passkey --self_extend_window=64 --self_extend_group=4
  # passkey retrieval on a lengths x depths grid
  python -m llama_jax.evaluate ... --task=passkey --lengths=4096,8192 --depths=0,0.5,1 --trials=10
  # LLM-Adapters math / commonsense accuracy (4-beam search; test sets in their dataset/ folder)
  python -m llama_jax.evaluate ... --task=math --data_dir=LLM-Adapters/dataset \
      --datasets=MultiArith,gsm8k,AddSub,AQuA,SingleEq,SVAMP --num_beams=4 --batch_size=8
  # a training run's own held-out loss (its data config and tokenizer)
  python -m llama_jax.evaluate --checkpoint=runs/tiny --task=heldout --out=results/
  # one plot from several runs
  python -m llama_jax.evaluate --task=plot --results='results/perplexity_*.json' --out=results/

`--task` is any registered evaluation (`llama_jax/evals/`); its options are the flags listed
under it in `--help`. `--checkpoint` is a converted checkpoint or a training workdir (its newest
checkpoint; `--tokenizer` then defaults to the workdir's). Each run writes
`<task>_<label>.json` (the options, the RoPE used and the numbers) and the evaluation's plots
and tables, e.g. `perplexity.png` (this run plus any --compare runs), `passkey_<label>.png` or
`math_table.md`. RoPE flags
override the checkpoint's rope: a new --rope_type starts from that type's defaults (keeping
rope_theta), otherwise the given fields replace the checkpoint's.

`core.cli` runs `PROGRAM` (flags, --help, one-line errors, exit status); `run(Options)` is the
same thing as a Python API.
"""
from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llama_jax import evals
from llama_jax.core import cli, files
from llama_jax.core.errors import ConfigError, DataError, UsageError
from llama_jax.evals import plots, registry
from llama_jax.rope import RopeConfig
from llama_jax.rope.config import apply_overrides

USAGE = """\
python -m llama_jax.evaluate --task=TASK --out=DIR [--checkpoint=DIR] [task options]

Evaluates a model (a training workdir or a converted checkpoint) and writes a JSON record and
plots to --out. Tasks: %s (--task=plot draws earlier results).

  # sliding-window perplexity (window = each length, stride 256) on local text files
  python -m llama_jax.evaluate --checkpoint=ckpt/llama2_7b --tokenizer=tokenizer.model \\
      --task=perplexity --files='data/govreport/*.txt' --lengths=2048,4096,8192 --out=results/
  # ... or on a TFDS dataset prepared as ArrayRecord (read in place, no TensorFlow)
  python -m llama_jax.evaluate ... --dataset=pg19 --split=test --min_tokens=8192
  # the same model with YaRN s=4 applied at inference, plotted against the first run
  python -m llama_jax.evaluate ... --task=perplexity --rope_type=yarn --factor=4 \\
      --original_max_position_embeddings=4096 --compare=results/perplexity_llama2_7b.json
  # passkey retrieval on a lengths x depths grid
  python -m llama_jax.evaluate ... --task=passkey --lengths=4096,8192 --depths=0,0.5,1 --trials=10
  # a training run's own held-out loss (its data and tokenizer)
  python -m llama_jax.evaluate --checkpoint=runs/tiny --task=heldout --out=results/
  # one plot from several result files
  python -m llama_jax.evaluate --task=plot --results='results/perplexity_*.json' --out=results/

A training workdir or a checkpoint that keeps its tokenizer.model needs no --tokenizer. An HF
or Meta directory must be converted first (python -m llama_jax.convert). A warning says when a
length goes past what the model's RoPE configuration covers."""

PLOT = "plot"
# RoPE fields settable by flag (the rest, e.g. short/long factors, through --rope_json).
ROPE_FLAGS = ("rope_type", "rope_theta", "factor", "original_max_position_embeddings",
              "beta_fast", "beta_slow", "attention_factor", "mscale", "mscale_all_dim",
              "low_freq_factor", "high_freq_factor")


def tasks() -> list[str]:
  return evals.names() + [PLOT]


class Options:
  """What to evaluate and where to write it; keyword arguments other than the common ones are
  the evaluation's own options (checked against `evals.get(task).options`)."""

  def __init__(self, task: str, out: str = "", checkpoint: str = "", tokenizer: str = "",
               rope: dict[str, Any] | None = None, dtype: str = "", attention: str = "",
               label: str = "", results: Sequence[str] = (), compare: Sequence[str] = (),
               self_extend_window: int | None = None, self_extend_group: int | None = None,
               **options):
    self.task, self.out, self.checkpoint, self.tokenizer = task, out, checkpoint, tokenizer
    self.rope = dict(rope or {})
    self.dtype, self.attention, self.label = dtype, attention, label
    self.self_extend = (self_extend_window, self_extend_group)
    self.results, self.compare = list(results), list(compare)
    self.options = options

  def evaluation(self) -> type[registry.Evaluation]:
    if self.task not in tasks():
      raise UsageError(f"--task={self.task!r}; allowed: {tasks()}")
    return evals.get(self.task)

  def resolved(self) -> dict[str, Any]:
    """The evaluation's options with its defaults filled in (checked by name and type)."""
    return registry.resolve_options(self.evaluation(), self.options, field="--{name}")


def _default_label(opts: Options, rope: RopeConfig) -> str:
  name = Path(opts.checkpoint.rstrip("/")).name or "model"
  parts = []
  if opts.rope:  # factor vectors (a search's rope.json) would make unreadable labels: skipped
    parts = [rope.rope_type] + [f"{k}={v}" for k, v in opts.rope.items()
                                if k != "rope_type" and not isinstance(v, (list, tuple))]
  if opts.self_extend != (None, None):
    parts.append("self_extend={}/{}".format(*opts.self_extend))
  return " ".join([name] + parts)


def _expand(patterns: Sequence[str], flag: str) -> list[str]:
  paths = []
  for pattern in patterns:
    found = sorted(glob.glob(os.path.expanduser(pattern)))
    if not found:
      raise UsageError(f"{flag}={pattern!r} matches no file; give result JSON files (or globs) "
                       "written by earlier evaluate runs")
    paths += found
  return paths


def _context(opts: Options, cfg):
  """The tokenizer (and, for a training workdir, its data) an evaluation may use."""
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.interop import convert
  from llama_jax.training import workdir as workdir_lib
  run = workdir_lib.read_config(opts.checkpoint) if workdir_lib.is_workdir(
      opts.checkpoint) else None
  tokenizer = opts.tokenizer or convert.tokenizer_of(opts.checkpoint)
  if not tokenizer:
    raise UsageError(f"--tokenizer is required for --task={opts.task}: {opts.checkpoint} keeps "
                     "no tokenizer.model (give the SentencePiece .model the model was trained "
                     "with)")
  tok = tokenizer_lib.Tokenizer(tokenizer)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size)
  context = registry.Context(tokenizer=tok, log=lambda s: print(s, flush=True))
  if run is not None:
    context.data, context.seq_len, context.seed = run.data, run.seq_len, run.seed
    context.batch_size = run.batch_size // run.grad_accum
  return context


def run(opts: Options) -> dict[str, Path]:
  """Runs one evaluation (or plots earlier results); returns the files written."""
  from llama_jax.interop import convert
  if not opts.out:
    raise UsageError("--out (the results directory) is required")
  files.check_output_directory(opts.out, "--out")
  if opts.task == PLOT:
    return run_plot(opts)
  cls = opts.evaluation()
  options = opts.resolved()
  # Everything that can fail fast does so before the model is loaded.
  compare = [files.read_json(p) for p in _expand(opts.compare, "--compare")]
  if not opts.checkpoint:
    raise UsageError(f"--checkpoint is required for --task={opts.task}")
  cfg = convert.load_config(opts.checkpoint)
  overrides = {}
  try:
    rope = apply_overrides(cfg.rope, opts.rope)
    overrides["rope"] = rope
    if opts.attention:
      overrides["attention"] = opts.attention
    if opts.self_extend != (None, None):
      overrides["self_extend_window"], overrides["self_extend_group"] = opts.self_extend
    if opts.dtype:
      overrides["dtype"] = overrides["param_dtype"] = opts.dtype
    cfg = cfg.replace(**overrides)  # validates (names the field and value) before any loading
  except ValueError as e:  # ModelConfig / RopeConfig name the field; say it came from a flag
    raise ConfigError(f"the RoPE / --attention / --self_extend / --dtype flags give a model that "
                      f"cannot work: {e}") from None
  overrides.pop("dtype", None)
  overrides.pop("param_dtype", None)
  evaluation = cls(options, _context(opts, cfg))
  try:
    model = convert.load_model(opts.checkpoint, dtype=opts.dtype or None, **overrides)
    result = evaluation.run(model)
  finally:
    evaluation.close()
  label = opts.label or _default_label(opts, rope)
  data = {"task": opts.task, "label": label, "checkpoint": opts.checkpoint,
          "rope": rope.to_dict(), "dtype": opts.dtype or "checkpoint", "options": options,
          **({"self_extend": dict(zip(("window", "group"), opts.self_extend))}
             if opts.self_extend != (None, None) else {}),
          **result.record}
  out = Path(opts.out)
  written = {"json": files.write_json(out / f"{opts.task}_{passkey_slug(label)}.json", data)}
  for name, fig in cls.figures(compare + [data]).items():
    written.setdefault("png", out / name)
    written[name] = plots.save(fig, out / name)
  for name, text in cls.tables(compare + [data]).items():
    written[name] = files.write_text(out / name, text)
  return written


def passkey_slug(text: str) -> str:
  from llama_jax.evals.passkey import slug
  return slug(text)


def run_plot(opts: Options) -> dict[str, Path]:
  if not opts.results:
    raise UsageError("--task=plot needs --results (result JSON paths or globs)")
  runs = [files.read_json(p) for p in _expand(opts.results, "--results")]
  out, written = Path(opts.out), {}
  for task in sorted({r.get("task") for r in runs}):
    if task not in evals.names():
      raise DataError(f"result files of task {task!r} cannot be plotted (are they result JSON "
                      f"files of llama_jax.evaluate?); known tasks: {evals.names()}")
    chosen = [r for r in runs if r.get("task") == task]
    for name, fig in evals.get(task).figures(chosen).items():
      written[name] = plots.save(fig, out / name)
    for name, text in evals.get(task).tables(chosen).items():
      written[name] = files.write_text(out / name, text)
  return written


# ------------------------------------------------------------------------------------- CLI
def _option_flags() -> dict[str, tuple[registry.Option, list[str]]]:
  """Every evaluation option by name, with the tasks that take it (one flag per name)."""
  found: dict[str, tuple[registry.Option, list[str]]] = {}
  for task in evals.names():
    for name, option in evals.get(task).options.items():
      if name in found and found[name][0].type is not option.type:
        raise TypeError(f"evaluation option {name!r} has different types in different tasks")
      found.setdefault(name, (option, []))[1].append(task)
  return found


_COMMON_FLAGS = (  # (kind, name, default, help)
    ("string", "out", None, "Results directory (JSON + PNG); created if missing."),
    ("string", "checkpoint", None, "A training workdir or a converted checkpoint (python -m "
     "llama_jax.convert makes one from HF or Meta weights)."),
    ("string", "tokenizer", None, "SentencePiece .model file (default: the one kept with the "
     "checkpoint)."),
    ("string", "rope_json", "", "RoPE overrides as a JSON object or file, HF field names "
     "(e.g. LongRoPE's short_factor/long_factor)."),
    ("string", "rope_type", None, "RoPE override: the method (default, linear, ntk, dynamic, "
     "yarn, ...); starts from that method's defaults."),
    *(("integer" if name == "original_max_position_embeddings" else "float", name, None,
       f"RoPE override: {name}.") for name in ROPE_FLAGS[1:]),
    ("string", "dtype", "", "Compute dtype override: float32, bfloat16 or float16."),
    ("string", "attention", "", "Attention kernel override (xla, xla_blocked, chunked, ...)."),
    ("integer", "self_extend_window", None, "Self-Extend neighbour window W (with "
     "--self_extend_group; W a multiple of G)."),
    ("integer", "self_extend_group", None, "Self-Extend group size G."),
    ("string", "label", "", "Name of this run in results and plots (default: the checkpoint's "
     "name and RoPE overrides)."),
    ("list", "results", [], "--task=plot: result JSON files or globs."),
    ("list", "compare", [], "Earlier result JSON files to plot alongside this run."),
)
_KINDS = {int: "integer", float: "float", str: "string", bool: "bool", tuple: "string"}


def define_flags(flag_values=None):
  """Defines the CLI's flags on `flag_values` (default: absl's global flags)."""
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("task", None, f"What to run: one of {tasks()}.", flag_values=fv)
  for kind, name, default, help_text in _COMMON_FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)
  for name, (option, used_by) in _option_flags().items():
    getattr(flags, f"DEFINE_{_KINDS[option.type]}")(
        name, None, f"{option.help} (--task={'|'.join(used_by)}; default {option.default!r})",
        flag_values=fv)
  flags.mark_flags_as_required(["task", "out"], flag_values=fv)


def _rope_json(text: str) -> dict:
  if not text:
    return {}
  try:
    value = json.loads(Path(text).read_text() if Path(text).is_file() else text)
  except (ValueError, UnicodeDecodeError) as e:
    raise UsageError(f"--rope_json={text!r:.80} is neither a JSON object nor a JSON file: "
                     f"{e}") from None
  if not isinstance(value, dict):
    raise UsageError(f"--rope_json must be a JSON object of RoPE fields, got {value!r:.80}")
  return value


def options_from_flags(f) -> Options:
  rope = _rope_json(f.rope_json)
  for name in ROPE_FLAGS:
    value = getattr(f, name)
    if value is not None:
      rope[name] = value
  given = {name: f[name].value for name in _option_flags() if f[name].value is not None}
  if f.task in evals.names():
    accepted = evals.get(f.task).options
    wrong = sorted(set(given) - set(accepted))
    if wrong:
      raise UsageError(f"flag(s) {['--' + w for w in wrong]} do not apply to --task={f.task}; "
                       f"its options are {sorted(accepted)}")
  return Options(task=f.task, out=f.out, checkpoint=f.checkpoint or "",
                 tokenizer=f.tokenizer or "", rope=rope, dtype=f.dtype, attention=f.attention,
                 label=f.label, results=f.results, compare=f.compare,
                 self_extend_window=f.self_extend_window, self_extend_group=f.self_extend_group,
                 **given)


def main(argv, flag_values=None):
  """The CLI. `flag_values` defaults to absl's global flags (see `define_flags`)."""
  from absl import flags
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  for name, path in run(options_from_flags(f)).items():
    if name != "png":
      print(f"wrote {path}")


PROGRAM = cli.Program("evaluate", USAGE % ", ".join(tasks()), define_flags, main)

if __name__ == "__main__":
  cli.run(PROGRAM)
