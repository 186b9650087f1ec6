"""`python -m llama_jax.generate`: prompts in, continuations out (KV-cache decoding).

The decoding itself lives in `llama_jax.inference.generate`; its API is re-exported here, so
`from llama_jax import generate; generate.generate(model, prompts, max_new_tokens)` works. This
module is the command line only: flags, their checks, and printing (`core.cli` runs it).
"""
from __future__ import annotations

import logging

from llama_jax.core import cli
from llama_jax.inference.generate import (  # noqa: F401  (the documented Python API)
  Generation,
  PaddedPrompts,
  Sampler,
  decode_step,
  filter_logits,
  generate,
  generate_array,
  pad_prompts,
  prefill,
  sample,
)

log = logging.getLogger("llama_jax.generate")

USAGE = """\
python -m llama_jax.generate --checkpoint=DIR --prompt=TEXT [--prompt=TEXT ...] [options]

Continues each prompt with a trained model and prints prompt + continuation.

  python -m llama_jax.generate --checkpoint=runs/tiny --prompt="def main(" --max_new_tokens=64
  python -m llama_jax.generate --checkpoint=ckpt/llama2_7b --tokenizer=tokenizer.model \\
      --prompt="The capital of France is" --temperature=0.7 --top_p=0.9
  # with searched RoPE factors (python -m llama_jax.search), or training-free Self-Extend
  python -m llama_jax.generate ... --rope_json=runs/dcis/rope.json
  python -m llama_jax.generate ... --self_extend_window=1024 --self_extend_group=8
  # an E²-LLM model trained in a 4096-token window, serving a longer prompt
  python -m llama_jax.generate ... --e2llm_window=4096

--checkpoint is a training workdir (its newest checkpoint; its tokenizer is used unless
--tokenizer says otherwise) or a checkpoint made by `python -m llama_jax.convert`. An HF or Meta
directory must be converted first. Decoding is greedy unless --temperature > 0."""


def define_flags(flag_values=None):
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("checkpoint", None, "A training workdir or a converted checkpoint "
                      "directory.", flag_values=fv)
  flags.DEFINE_string("tokenizer", None, "SentencePiece .model file (default: the one kept in "
                      "the workdir or checkpoint).", flag_values=fv)
  flags.DEFINE_multi_string("prompt", None, "Prompt text; repeat the flag for several prompts.",
                            flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 128, "Tokens to generate per prompt (at most).",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_float("temperature", 0.0, "Sampling temperature; 0 = greedy.", lower_bound=0.0,
                     flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "Sample from the k most probable tokens only (0 = all).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_float("top_p", 1.0, "Sample from the smallest set of tokens whose probability "
                     "reaches top_p, in (0, 1] (1 = all).", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "Sampling seed.", flag_values=fv)
  flags.DEFINE_enum("dtype", "", ["", "float32", "bfloat16", "float16"],
                    "Compute dtype (default: the checkpoint's).", flag_values=fv)
  flags.DEFINE_bool("stop_at_eos", True, "Stop a prompt at the tokenizer's end-of-sequence "
                    "token.", flag_values=fv)
  flags.DEFINE_string("rope_json", "", "RoPE overrides as JSON (a file such as a search's "
                      "rope.json, or a JSON string), HF field names.", flag_values=fv)
  flags.DEFINE_integer("self_extend_window", None, "Self-Extend neighbour window W (with "
                       "--self_extend_group).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("self_extend_group", None, "Self-Extend group size G (W must be a "
                       "multiple of G).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("e2llm_window", 0, "An E²-LLM model's pre-training window L: each prompt "
                       "runs with the PI scale ceil((prompt + new tokens - 1) / L) (0 = off).",
                       lower_bound=0, flag_values=fv)
  flags.mark_flags_as_required(["checkpoint", "prompt"], flag_values=fv)
  flags.register_validator("top_p", lambda v: 0.0 < v <= 1.0,
                           "--top_p must be in (0, 1]", flag_values=fv)


def main(argv, flag_values=None):
  """Prints each prompt with its continuation. `flag_values` defaults to absl's global flags
  (`core.cli` passes the ones it parsed)."""
  from absl import flags

  from llama_jax.core.errors import UsageError
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.interop import convert
  from llama_jax.rope.config import past_context_warning

  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  # Everything that needs no device first: the checkpoint's config, the tokenizer, the prompts.
  cfg = convert.load_config(f.checkpoint)
  tokenizer = f.tokenizer or convert.tokenizer_of(f.checkpoint)
  if not tokenizer:
    raise UsageError(f"--tokenizer is required: {f.checkpoint} keeps no tokenizer.model (give "
                     "the SentencePiece .model the model was trained with)")
  tok = tokenizer_lib.Tokenizer(tokenizer)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size)
  overrides = model_overrides(cfg, f.rope_json, f.self_extend_window, f.self_extend_group)
  prompts = [tok.encode(p, bos=True, eos=False) for p in f.prompt]
  if not f.e2llm_window:  # an E²-LLM scale covers each prompt's length by construction
    warning = past_context_warning(overrides.get("rope", cfg.rope),
                                   [len(p) + f.max_new_tokens for p in prompts],
                                   "prompt + max_new_tokens")
    if warning:
      log.warning(warning)
  model = convert.load_model(f.checkpoint, dtype=f.dtype or None, **overrides)
  outs = generate(model, prompts, f.max_new_tokens, temperature=f.temperature, top_k=f.top_k,
                  top_p=f.top_p, eos_id=tok.eos_id if f.stop_at_eos else None, seed=f.seed,
                  e2llm_window=f.e2llm_window)
  for ids, new in zip(prompts, outs):
    # Decoded together with the prompt so the first new word keeps its leading space; ids past
    # the tokenizer (a padded embedding table) have no text.
    print(tok.decode(ids + [t for t in new if t != tok.eos_id and t < tok.vocab_size]))
    print("-" * 40)


def model_overrides(cfg, rope_json: str = "", window: int | None = None,
                    group: int | None = None) -> dict:
  """ModelConfig overrides from --rope_json and the Self-Extend flags, validated against `cfg`
  (a bad value fails here, before any weight is read)."""
  from llama_jax.core.errors import ConfigError
  from llama_jax.rope.config import apply_overrides, read_json
  overrides = {}
  try:
    if rope_json:
      overrides["rope"] = apply_overrides(cfg.rope, read_json(rope_json))
    if window is not None or group is not None:
      overrides.update(self_extend_window=window, self_extend_group=group)
    cfg.replace(**overrides)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from None
  return overrides


PROGRAM = cli.Program("generate", USAGE, define_flags, main)

if __name__ == "__main__":
  cli.run(PROGRAM)
