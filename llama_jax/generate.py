"""`python -m llama_jax.generate`: prompts in, continuations out (KV-cache decoding).

  python -m llama_jax.generate --checkpoint=RUN_OR_CKPT --tokenizer=tokenizer.model \
      --prompt="def main(" --max_new_tokens=64
  # with searched RoPE factors (python -m llama_jax.search), or training-free Self-Extend
  python -m llama_jax.generate ... --rope_json=runs/dcis/rope.json
  python -m llama_jax.generate ... --self_extend_window=1024 --self_extend_group=8
  # an E²-LLM model trained in a 4096-token window, serving a longer prompt
  python -m llama_jax.generate ... --e2llm_window=4096

The decoding itself lives in `llama_jax.inference.generate`; its API is re-exported here, so
`from llama_jax import generate; generate.generate(model, prompts, max_new_tokens)` works.
"""
from __future__ import annotations

from llama_jax.inference.generate import (  # noqa: F401  (the documented Python API)
    Generation, PaddedPrompts, Sampler, decode_step, filter_logits, generate, generate_array,
    pad_prompts, prefill, sample)


def main(argv, flag_values=None):
  """The CLI: prints each prompt with its continuation. `flag_values` defaults to absl's global
  flags (tests pass their own `FlagValues`, defined with `define_flags`)."""
  from absl import flags
  from llama_jax.interop import convert
  from llama_jax.data import tokenizer as tokenizer_lib

  if len(argv) > 1:
    raise ValueError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  tok = tokenizer_lib.Tokenizer(f.tokenizer)
  cfg = convert.load_config(f.checkpoint)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size)
  overrides = model_overrides(cfg, f.rope_json, f.self_extend_window, f.self_extend_group)
  model = convert.load_model(f.checkpoint, dtype=f.dtype or None, **overrides)
  prompts = [tok.encode(p, bos=True, eos=False) for p in f.prompt]
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
  from llama_jax.rope.config import apply_overrides, read_json
  overrides = {}
  if rope_json:
    overrides["rope"] = apply_overrides(cfg.rope, read_json(rope_json))
  if window is not None or group is not None:
    overrides.update(self_extend_window=window, self_extend_group=group)
  cfg.replace(**overrides)
  return overrides


def define_flags(flag_values=None):
  from absl import flags
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string("checkpoint", None, "converted llama_jax checkpoint directory",
                      flag_values=fv)
  flags.DEFINE_string("tokenizer", None, "sentencepiece .model file", flag_values=fv)
  flags.DEFINE_multi_string("prompt", None, "prompt text (repeat the flag for a batch)",
                            flag_values=fv)
  flags.DEFINE_integer("max_new_tokens", 128, "tokens to generate per prompt", flag_values=fv)
  flags.DEFINE_float("temperature", 0.0, "0 = greedy", flag_values=fv)
  flags.DEFINE_integer("top_k", 0, "keep the k most probable tokens when sampling (0 = all)",
                       flag_values=fv)
  flags.DEFINE_float("top_p", 1.0, "nucleus probability when sampling (1 = all)",
                     flag_values=fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", flag_values=fv)
  flags.DEFINE_string("dtype", "", "compute dtype override (float32 | bfloat16)", flag_values=fv)
  flags.DEFINE_bool("stop_at_eos", True, "stop a prompt at the tokenizer's EOS", flag_values=fv)
  flags.DEFINE_string("rope_json", "", "RoPE overrides as JSON (a file such as a search's "
                      "rope.json, or a JSON string), HF field names", flag_values=fv)
  flags.DEFINE_integer("self_extend_window", None, "Self-Extend neighbour window W (with "
                       "--self_extend_group)", flag_values=fv)
  flags.DEFINE_integer("self_extend_group", None, "Self-Extend group size G (W must be a "
                       "multiple of G)", flag_values=fv)
  flags.DEFINE_integer("e2llm_window", 0, "an E²-LLM model's pre-training window L: each prompt "
                       "runs with the PI scale ceil((prompt + new tokens - 1) / L) (0 = off)",
                       flag_values=fv)
  flags.mark_flags_as_required(["checkpoint", "tokenizer", "prompt"], flag_values=fv)


if __name__ == "__main__":
  from absl import app
  define_flags()
  app.run(main)
