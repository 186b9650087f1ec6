r"""`python -m llama_jax.search`: search RoPE factors λ for a target context length.

  # DCIS at 4x the tiny model's 256 positions, on local text files (one document by default)
  python -m llama_jax.search --method=dcis --checkpoint=runs/tiny --files='docs/*.txt' \
      --target_len=1024 --factor=4 --out=runs/tiny_dcis_4x
  # LongRoPE's evolutionary search, as the DCIS authors' baseline, without the monotone constraint
  python -m llama_jax.search --method=evolution --nomonotone ... --out=runs/tiny_evo_4x
  # then use the factors
  python -m llama_jax.evaluate --checkpoint=runs/tiny --rope_json=runs/tiny_dcis_4x/rope.json ...
  python -m llama_jax.train --config=configs/dcis_7b.py --rope_json=runs/dcis_64k/rope.json

The objective is perplexity at --target_len on documents truncated to one window each (BOS +
target_len − 1 tokens); documents shorter than that are skipped, and none long enough is an
error. Writes DIR/search.json (the factors, perplexities, history) and DIR/rope.json (HF
`rope_parameters`, rope_type longrope); every evaluation is journaled in
DIR/search_state.jsonl, so rerunning the same command after an interruption resumes where it
stopped. The methods' own options (`llama_jax/search/`) are flags too; see --help.
"""
from __future__ import annotations

from llama_jax import search
from llama_jax.core import cli
from llama_jax.core.errors import UsageError
from llama_jax.search import command

USAGE = """\
python -m llama_jax.search --method=dcis|evolution --checkpoint=RUN_OR_CKPT --target_len=T \\
    --out=DIR (--files=GLOB | --dataset=NAME) [--tokenizer=FILE] [--factor=s] [options]

Searches RoPE factors λ (one per frequency pair) that minimise perplexity at --target_len, and
writes DIR/rope.json for train, evaluate, generate and convert (--rope_json).

  # DCIS at 4x the tiny model's 256 positions, on local text files (one document by default)
  python -m llama_jax.search --method=dcis --checkpoint=runs/tiny --files='docs/*.txt' \\
      --target_len=1024 --factor=4 --out=runs/tiny_dcis_4x
  # LongRoPE's evolutionary search, as the DCIS authors' baseline, without the monotone constraint
  python -m llama_jax.search --method=evolution --nomonotone ... --out=runs/tiny_evo_4x

Everything that can be checked without the weights (method options, head_dim, factors,
tokenizer, documents long enough, a journal made under other settings) is checked first, so a
bad request writes nothing. Every evaluation is journaled in DIR/search_state.jsonl: rerunning
the same command after an interruption resumes where it stopped."""

_COMMON_FLAGS = (  # (kind, name, default, help)
    ("string", "checkpoint", None, "a converted checkpoint or a training workdir"),
    ("string", "tokenizer", "", "sentencepiece .model file (default: a workdir's own)"),
    ("string", "files", "", "glob of UTF-8 text files, one document each"),
    ("string", "dataset", "", "or a prepared TFDS dataset read in place, e.g. pg19"),
    ("string", "split", "validation", "the TFDS split"),
    ("string", "tfds_data_dir", "", "where TFDS datasets live ('' = the TFDS default)"),
    ("string", "text_key", "text", "the TFDS feature holding the text"),
    ("integer", "target_len", None, "context length the factors are searched for (tokens)"),
    ("float", "factor", None, "scale s (default: target_len / original length)"),
    ("integer", "original_length", None, ("L, the pre-training context (default: the "
                                          "checkpoint's original_max_position_embeddings, "
                                          "else max_position_embeddings)")),
    ("string", "init", "yarn", "start: yarn | ntk | ones | a JSON file with long_factor"),
    ("float", "beta_fast", 32.0, "YaRN start's beta_fast (Mistral: 128)"),
    ("float", "beta_slow", 1.0, "YaRN start's beta_slow (Mistral: 2)"),
    ("integer", "max_documents", 1, "documents scored per evaluation (0 = all long enough)"),
    ("integer", "batch_size", 1, "windows per model call"),
    ("string", "dtype", "", "compute dtype override (float32 | bfloat16)"),
    ("string", "attention", "", "attention kernel override (e.g. chunked for long targets)"),
    ("string", "out", None, "the search's directory (search.json, rope.json, the journal)"),
)
_KINDS = {int: "integer", float: "float", str: "string", bool: "bool", tuple: "list"}


def _option_flags() -> dict:
  """Every method option by name, with the methods that take it (one flag per name)."""
  found = {}
  for name in search.names():
    for option_name, option in search.get(name).options.items():
      found.setdefault(option_name, (option, []))[1].append(name)
  return found


def define_flags(flag_values=None):
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("method", None, f"the search: {search.names()}", flag_values=fv)
  for kind, name, default, help_text in _COMMON_FLAGS:
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=fv)
  flags.DEFINE_enum("progress", "auto", ["auto", "on", "off"],
                    "progress bar: auto = on a terminal only", flag_values=fv)
  for name, (option, used_by) in _option_flags().items():
    getattr(flags, f"DEFINE_{_KINDS[type(option.default)]}")(
        name, None, f"{option.help} (--method={'|'.join(used_by)}; default "
        f"{option.default!r})", flag_values=fv)
  flags.mark_flags_as_required(["method", "checkpoint", "target_len", "out"], flag_values=fv)


def request_from_flags(f) -> command.Request:
  given = {name: f[name].value for name in _option_flags() if f[name].value is not None}
  if f.method in search.names():
    accepted = search.get(f.method).options
    wrong = sorted(set(given) - set(accepted))
    if wrong:
      raise UsageError(f"flag(s) {['--' + w for w in wrong]} do not apply to --method="
                       f"{f.method}; its options are {sorted(accepted)}")
    for name, value in list(given.items()):
      if isinstance(accepted[name].default, tuple):
        given[name] = tuple(float(v) for v in value)
  common = {name: f[name].value for _, name, _, _ in _COMMON_FLAGS}
  return command.Request(method=f.method, options=given,
                         progress={"auto": None, "on": True, "off": False}[f.progress],
                         **common)


def main(argv, flag_values=None):
  from absl import flags
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  record = command.run(request_from_flags(f))
  print(f"{record['method']}: start ppl {record['start_ppl']}, result ppl {record['best_ppl']} "
        f"after {record['evaluations']} evaluations ({record['replayed']} replayed)"
        + (f", {record['compiles']} compilations" if "compiles" in record else ""))
  print(f"wrote {f.out}/search.json and {f.out}/rope.json")


PROGRAM = cli.Program("search", USAGE, define_flags, main)

if __name__ == "__main__":
  cli.run(PROGRAM)
