"""Passkey retrieval (Mohtashami & Jaggi, "Landmark Attention", as used by the YaRN paper).

The prompt is five parts joined by "\\n": the task description, a garbage prefix, the line with
the key, a garbage suffix and the question. Garbage is one fixed paragraph repeated (joined by
spaces) and cut by characters. The key is a random integer in 1..50000; the model answers with
greedy decoding of at most 10 tokens and is right iff the first integer in its answer is the key.

Differences from the reference script, all deliberate:
- The key's depth is a parameter (0 = right after the task description, 1 = right before the
  question) instead of uniformly random, so accuracy is reported on a lengths x depths grid.
- The prompt is built to the requested token count and never over it: the garbage is the
  longest (in characters) whose prompt, BOS included, has at most the target count, so one
  more character would pass it. The reference grew the garbage in 128-character steps until
  the prompt reached the target, overshooting by up to a step (~25 tokens with LLaMA's
  tokenizer) — the cell at the trained length then really sat past it. The search brackets
  from an estimate in `step`-character jumps and then bisects to one character, so a
  128k-token prompt costs a few dozen tokenizations, not thousands.

A progress bar with ETA counts the trials (on a terminal only, `core.progress`).
"""
from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Sequence

from llama_jax.core import progress
from llama_jax.core.errors import ConfigError
from llama_jax.evals import plots, registry
from llama_jax.evals.registry import Option

TASK = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
        "them. I will quiz you about the important information there.")
GARBAGE = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
           "There and back again.")
QUESTION = "What is the pass key? The pass key is"
MAX_KEY = 50000
MAX_NEW_TOKENS = 10


def key_line(key: int) -> str:
  return f"The pass key is {key}. Remember it. {key} is the pass key."


def garbage(n_chars: int) -> str:
  """The garbage paragraph repeated (space-joined) and cut to exactly n_chars characters."""
  reps = n_chars // (len(GARBAGE) + 1) + 1
  return " ".join([GARBAGE] * reps)[:n_chars]


def prompt_text(n_garbage: int, depth: float, key: int) -> str:
  """The prompt with n_garbage garbage characters, a fraction `depth` of them before the key."""
  n_prefix = round(depth * n_garbage)
  return "\n".join([TASK, garbage(n_prefix), key_line(key), garbage(n_garbage - n_prefix),
                    QUESTION])


def parse_answer(text: str) -> int | None:
  """The first integer in the model's answer (None if there is none)."""
  match = re.search(r"\d+", text)
  return int(match.group()) if match else None


@dataclasses.dataclass(frozen=True)
class Prompt:
  text: str
  tokens: list[int]  # BOS included
  key: int
  depth: float
  n_garbage: int  # garbage characters
  target: int  # requested token count


def find_garbage_length(count: Callable[[int], int], target: int, step: int, hint: int = 0
                        ) -> int:
  """The largest n (characters) with count(n) <= target and count(n + 1) > target.

  `count(n)` is the token count of the prompt with n garbage characters. The search keeps
  count(lo) <= target < count(hi): it widens from `hint` by doubling jumps of `step`
  characters, then bisects until hi == lo + 1. The bracket holds even where `count` is not
  monotone (cutting words by characters can), so the result never exceeds the target.
  """
  if count(0) > target:
    raise ValueError(f"passkey length {target} is too short: the prompt without garbage already "
                     f"has {count(0)} tokens")
  n, jump = max(0, int(hint)), max(1, int(step))
  if count(n) <= target:  # walk up until past the target
    lo, hi = n, n + jump
    while count(hi) <= target:
      lo, jump = hi, jump * 2
      hi = lo + jump
  else:  # walk down until within it
    hi = n
    lo = max(0, hi - jump)
    while count(lo) > target:
      hi, jump = lo, jump * 2
      lo = max(0, hi - jump)
  while hi - lo > 1:
    mid = (lo + hi) // 2
    if count(mid) <= target:
      lo = mid
    else:
      hi = mid
  return lo


def build_prompt(tokenizer, target: int, depth: float, key: int, step: int = 128,
                 hint: int = 0) -> Prompt:
  """A passkey prompt of at most `target` tokens (BOS included), one garbage character short
  of passing it; `step` is the search's jump in characters (see `find_garbage_length`)."""
  if not 0.0 <= depth <= 1.0:
    raise ValueError(f"passkey depth={depth} must be within [0, 1]")
  if not 1 <= key <= MAX_KEY:
    raise ValueError(f"pass key {key} must be within 1..{MAX_KEY}")
  if step < 1:
    raise ValueError(f"garbage step={step} must be >= 1 character")
  cache: dict[int, list[int]] = {}

  def encode(n):
    if n not in cache:
      cache[n] = tokenizer.encode(prompt_text(n, depth, key), bos=True, eos=False)
    return cache[n]

  if not hint:
    # Characters per token of garbage, to start the search near the answer.
    sample = garbage(4096)
    per_token = len(sample) / max(1, len(tokenizer.encode(sample, bos=False, eos=False)))
    hint = int(max(0, target - len(encode(0))) * per_token)
  n = find_garbage_length(lambda m: len(encode(m)), target, step, hint)
  return Prompt(prompt_text(n, depth, key), encode(n), key, depth, n, target)


GenerateFn = Callable[[list[list[int]]], list[list[int]]]


def evaluate(generate_fn: GenerateFn, tokenizer, lengths: Sequence[int],
             depths: Sequence[float], trials: int, *, seed: int = 0, step: int = 128,
             log: Callable[[str], None] | None = None) -> dict:
  """Accuracy on a lengths x depths grid, `trials` random keys per cell.

  generate_fn maps a batch of prompts (token lists) to the new tokens of each (greedy, at most
  MAX_NEW_TOKENS); the answer is their decoded text. Returns a JSON-ready dict with
  `accuracy[i][j]` for lengths[i], depths[j] and one record per trial.
  """
  if trials < 1:
    raise ValueError(f"passkey trials={trials} must be >= 1")
  rng = random.Random(seed)
  records, accuracy = [], []
  bar = progress.Bar(len(lengths) * len(depths) * trials, "passkey", unit="trial")
  for length in lengths:
    row, hint = [], 0
    for depth in depths:
      prompts = []
      for _ in range(trials):
        p = build_prompt(tokenizer, length, depth, rng.randint(1, MAX_KEY), step, hint)
        hint = p.n_garbage
        prompts.append(p)
      answers = generate_fn([p.tokens for p in prompts])
      correct = 0
      eos, vocab = tokenizer.eos_id, tokenizer.vocab_size
      for p, new in zip(prompts, answers):
        # Ids past the tokenizer (a model may have a padded embedding table) have no text.
        text = tokenizer.decode([t for t in new if t != eos and 0 <= t < vocab])
        answer = parse_answer(text)
        correct += answer == p.key
        records.append({"length": int(length), "depth": float(depth), "key": p.key,
                        "n_tokens": len(p.tokens), "n_garbage_chars": p.n_garbage,
                        "answer_text": text, "answer": answer, "correct": answer == p.key})
      row.append(correct / trials)
      bar.update(trials, length=length, depth=f"{depth:.2f}")
      if log:
        log(f"length {length} depth {depth:.2f}: {correct}/{trials} correct")
    accuracy.append(row)
  bar.close()
  return {"task": "passkey", "lengths": [int(x) for x in lengths],
          "depths": [float(d) for d in depths], "trials": int(trials), "seed": int(seed),
          "accuracy": accuracy, "records": records}


# ------------------------------------------------------------------------------ evaluation
@registry.register
class Passkey(registry.Evaluation):
  """Passkey retrieval accuracy on a lengths x depths grid (greedy decoding, KV cache)."""
  name = "passkey"
  description = "passkey retrieval (Landmark Attention format) on a lengths x depths grid"
  options = {
      "lengths": Option((), "prompt lengths (tokens)", int),
      "depths": Option((0.0, 0.25, 0.5, 0.75, 1.0), "key depths in [0, 1]", float),
      "trials": Option(10, "random keys per length and depth"),
      "seed": Option(0, "key seed"),
      "garbage_step": Option(128, "first jump of the prompt-length search (characters)"),
      "pad_multiple": Option(64, "pad prompts to a multiple of this (shared compilations)"),
      "batch_size": Option(1, "prompts per generation call"),
      "e2llm_window": Option(0, "E²-LLM pre-training window L: decode each prompt with the PI "
                                "scale g = ceil(length / L) (0 = off)"),
  }

  @classmethod
  def check(cls, c):
    if not c["lengths"] or min(c["lengths"]) < 2:
      raise ConfigError(f"lengths={list(c['lengths'])} must list context lengths >= 2")
    if not c["depths"] or not all(0 <= d <= 1 for d in c["depths"]):
      raise ConfigError(f"depths={list(c['depths'])} must list fractions within [0, 1]")
    for name in ("trials", "garbage_step", "pad_multiple", "batch_size"):
      if c[name] < 1:
        raise ConfigError(f"passkey {name}={c[name]} must be >= 1")
    if c["e2llm_window"] < 0:
      raise ConfigError(f"passkey e2llm_window={c['e2llm_window']}; allowed: an integer >= 0 "
                        "(0 = off)")

  def run(self, model) -> registry.Result:
    from llama_jax.inference import generate as generate_lib
    c, tok = self.config, self.context.tokenizer

    def generate_fn(prompts):
      out = []
      for start in range(0, len(prompts), c["batch_size"]):
        out += generate_lib.generate(model, prompts[start:start + c["batch_size"]],
                                     MAX_NEW_TOKENS, eos_id=tok.eos_id,
                                     pad_multiple=c["pad_multiple"],
                                     e2llm_window=c["e2llm_window"])
      return out

    if not c["e2llm_window"]:  # an E²-LLM scale covers each length by construction
      registry.warn_past_context(model, c["lengths"], "passkey prompt")
    record = evaluate(generate_fn, tok, c["lengths"], c["depths"], c["trials"], seed=c["seed"],
                      step=c["garbage_step"], log=self.context.log)
    record.pop("task")
    metrics = {f"passkey_{n}": sum(row) / len(row)
               for n, row in zip(record["lengths"], record["accuracy"])}
    return registry.Result(metrics, record)

  @classmethod
  def figures(cls, records):
    return {f"passkey_{slug(r.get('label', 'run'))}.png": plots.passkey_figure(r)
            for r in records}


def slug(text: str) -> str:
  """`text` as a file-name part."""
  return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_") or "run"
