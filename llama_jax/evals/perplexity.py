"""Sliding-window and truncated-document perplexity, the protocol of the PI and YaRN papers.

For a document of N tokens, window length W and stride S (`windows`):

  prev_end = 0
  for begin in 0, S, 2S, ...:
    end = min(begin + W - 1, N)             # W - 1 document tokens + the BOS = W inputs
    input = [BOS] + doc[begin:end]
    score the last (end - prev_end) tokens of the window, each predicted from its prefix
    prev_end = end; stop when end == N

so every document token is scored exactly once, with up to W - 1 tokens of context. (If S > W - 1
the tokens between one window's end and the next one's begin are never scored and each window
scores all its tokens: what the reference script does in that case too.) Truncated mode cuts each
document to W - 1 tokens and uses S = W - 1: one window per document, no sliding.

Reported per length: `ppl` = exp(mean over all windows of all documents of the window's mean
NLL) — the papers' number, not token-weighted — and `token_weighted_ppl` = exp(total NLL / total
scored tokens).

RoPE values that change between evaluations (`rope.RopeInputs`: a PI scale, LongRoPE/DCIS factor
vectors λ, an attention factor) are arrays of the scoring function, shared by all windows: a
search that scores many λ candidates at one length compiles once. `e2llm_window=L` evaluates an
E²-LLM model: each length W is scored with the PI scale g = ⌈W / L⌉ (the paper's g = L_eval / L).

Cost: windows of one length are batched (`batch_size` rows) and right-padded to W, so one jitted
scoring function per window shape serves a whole length. Padding sits at position 0 with segment
id 0: causal attention never reaches it and length-dependent RoPE methods see each window's own
length (max position + 1), exactly as if the window had been run alone. Logits exist for at
most `chunk_size` positions at a time: the NLL is computed from the final hidden states in
chunks (`loss.token_nll`), so a 64k-token window never holds [64k, vocab] logits. A progress
bar with ETA counts the windows (on a terminal only, `core.progress`).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from llama_jax.core import progress
from llama_jax.core.errors import ConfigError
from llama_jax.data import documents
from llama_jax.evals import plots, registry
from llama_jax.evals.registry import Option
from llama_jax.model import loss as loss_lib
from llama_jax.rope import inputs as rope_inputs_lib
from llama_jax.rope.inputs import RopeInputs


class Window(NamedTuple):
  doc: int  # index of the document
  begin: int  # first document token in the window (after the BOS)
  end: int  # one past the last document token
  n_scored: int  # the last n_scored document tokens of the window are scored


def windows(n_tokens: int, length: int, stride: int, truncate: bool = False, doc: int = 0
            ) -> list[Window]:
  """The windows of one document (see the module docstring)."""
  if length < 2:
    raise ValueError(f"window length={length} must be >= 2 (the BOS plus at least one token)")
  if stride < 1:
    raise ValueError(f"stride={stride} must be >= 1")
  span = length - 1
  if truncate:
    n_tokens, stride = min(n_tokens, span), span
  out, prev_end = [], 0
  for begin in range(0, n_tokens, stride):
    end = min(begin + span, n_tokens)
    # A window scores at most its own tokens (when stride > span, tokens in the gap go unscored).
    out.append(Window(doc, begin, end, min(end - prev_end, end - begin)))
    prev_end = end
    if end == n_tokens:
      break
  return out


def window_rows(docs: Sequence[Sequence[int]], wins: Sequence[Window], length: int, bos_id: int,
                batch_size: int):
  """Yields batches of right-padded windows: dict of int32/float32 arrays [batch_size, length].

  tokens/positions/segment_ids are the model inputs; targets[j] is the token after input j and
  weights[j] is 1 where that prediction is scored. Missing rows of the last batch are all
  padding with weight 0.
  """
  for start in range(0, len(wins), batch_size):
    chunk = wins[start:start + batch_size]
    arrays = {name: np.zeros((batch_size, length), np.int32)
              for name in ("tokens", "positions", "segment_ids", "targets")}
    arrays["weights"] = np.zeros((batch_size, length), np.float32)
    for row, w in enumerate(chunk):
      ids = np.concatenate([[bos_id], np.asarray(docs[w.doc][w.begin:w.end])]).astype(np.int32)
      n = len(ids)
      arrays["tokens"][row, :n] = ids
      arrays["positions"][row, :n] = np.arange(n)
      arrays["segment_ids"][row, :n] = 1
      arrays["targets"][row, :n - 1] = ids[1:]
      arrays["weights"][row, n - 1 - w.n_scored:n - 1] = 1.0
    yield arrays


@functools.partial(jax.jit, static_argnums=(0, 8))
def _score(graphdef, state, tokens, positions, segment_ids, targets, weights, rope_inputs,
           chunk_size):
  """Per row: (sum of scored NLL, number of scored tokens)."""
  model = nnx.merge(graphdef, state)
  hidden, _ = model.features(tokens, positions, segment_ids, rope_inputs=rope_inputs)
  nll = loss_lib.token_nll(hidden, model.head(), targets, chunk_size)
  return jnp.sum(nll * weights, axis=-1), jnp.sum(weights, axis=-1)


def check_shared_inputs(model, rope_inputs: RopeInputs | None) -> None:
  """RoPE inputs shared by every window (scalars, [head_dim/2] vectors) that fit the model."""
  cfg = model.cfg
  rope_inputs_lib.check(rope_inputs, cfg.rope, cfg.head_dim)
  for name, value in ({} if rope_inputs is None else rope_inputs.given()).items():
    if np.ndim(value) != (1 if name in ("short_factor", "long_factor") else 0):
      raise ConfigError(f"perplexity rope input {name} has shape {np.shape(value)}; windows share "
                        "one value: a scalar, or one [head_dim/2] vector for factor vectors")


def score_windows(model, docs, wins, length, bos_id, batch_size=1, chunk_size=1024,
                  rope_inputs: RopeInputs | None = None, bar: progress.Bar | None = None):
  """float64 arrays (sum NLL, scored tokens), one entry per window, in the order of `wins`.

  rope_inputs: RoPE values shared by all windows (`check_shared_inputs`); new values reuse the
  compiled scoring function. `bar` (if given) advances by the windows of each batch.
  """
  check_shared_inputs(model, rope_inputs)
  graphdef, state = nnx.split(model)
  rope_inputs = rope_inputs_lib.as_arrays(rope_inputs)
  sums, counts = [], []
  n = len(wins)
  for start, batch in zip(range(0, n, batch_size),
                          window_rows(docs, wins, length, bos_id, batch_size)):
    s, c = _score(graphdef, state, *(jnp.asarray(batch[k]) for k in
                                     ("tokens", "positions", "segment_ids", "targets", "weights")),
                  rope_inputs, int(chunk_size))
    sums.append(np.asarray(s, np.float64))
    counts.append(np.asarray(c, np.float64))
    if bar is not None:
      bar.update(min(batch_size, n - start), length=length)
  return np.concatenate(sums)[:n], np.concatenate(counts)[:n]


def summarize(sums: np.ndarray, counts: np.ndarray) -> dict:
  """The two perplexities from per-window NLL sums and scored-token counts."""
  if not len(sums) or counts.min() <= 0:
    raise ValueError("no scored tokens: every window needs at least one scored token")
  mean_nll = float(np.mean(sums / counts))
  weighted = float(sums.sum() / counts.sum())
  return {"ppl": math.exp(mean_nll), "mean_nll": mean_nll,
          "token_weighted_ppl": math.exp(weighted), "token_weighted_nll": weighted,
          "n_windows": int(len(sums)), "n_tokens": int(counts.sum())}


def evaluate(model, docs: Sequence[Sequence[int]], lengths: Sequence[int], *, stride: int,
             bos_id: int, truncate: bool = False, batch_size: int = 1, chunk_size: int = 1024,
             log: Callable[[str], None] | None = None, rope_inputs: RopeInputs | None = None,
             e2llm_window: int = 0) -> list[dict]:
  """Perplexity of `model` on tokenized documents (without BOS) at each window length.

  rope_inputs: RoPE values shared by all windows (e.g. a λ vector as `long_factor`);
  e2llm_window: score length W with the PI scale ⌈W / e2llm_window⌉ (0 = off).
  """
  docs = [list(d) for d in docs]
  if not docs or not any(docs):
    raise ValueError("perplexity needs at least one non-empty tokenized document")
  if batch_size < 1:
    raise ValueError(f"batch_size={batch_size} must be >= 1")
  check_shared_inputs(model, rope_inputs)
  rope_inputs_lib.check_window(e2llm_window, model.cfg.rope)
  if e2llm_window and rope_inputs is not None and rope_inputs.scale is not None:
    raise ConfigError("give either e2llm_window (the scale follows the length) or a rope input "
                      "scale, not both")
  results = []
  per_length = [[w for i, d in enumerate(docs) if d
                 for w in windows(len(d), length, stride, truncate, doc=i)] for length in lengths]
  bar = progress.Bar(sum(map(len, per_length)), "perplexity", unit="window")
  for length, wins in zip(lengths, per_length):
    inputs, extra = rope_inputs, {}
    if e2llm_window:
      scale = rope_inputs_lib.scale_for_length(length, e2llm_window)
      inputs = (rope_inputs or RopeInputs()).replace(scale=np.float32(scale))
      extra = {"e2llm_scale": scale}
    sums, counts = score_windows(model, docs, wins, length, bos_id, batch_size, chunk_size,
                                 inputs, bar)
    row = {"length": int(length), **summarize(sums, counts),
           "n_documents": sum(1 for d in docs if d), **extra}
    results.append(row)
    if log:
      log(f"length {length}: ppl {row['ppl']:.4f} (token-weighted {row['token_weighted_ppl']:.4f})"
          f" over {row['n_windows']} windows, {row['n_tokens']} tokens")
  bar.close()
  return results


# ------------------------------------------------------------------------------ evaluation
@registry.register
class Perplexity(registry.Evaluation):
  """Sliding-window (or truncated) perplexity of whole documents at each window length."""
  name = "perplexity"
  description = "sliding-window / truncated-document perplexity (the PI and YaRN protocol)"
  options = {
      "files": Option("", "glob of UTF-8 text files, one document each"),
      "dataset": Option("", "or a prepared TFDS dataset read in place, e.g. pg19"),
      "split": Option("test", "the TFDS split"),
      "tfds_data_dir": Option("", "where TFDS datasets live ('' = the TFDS default)"),
      "text_key": Option("text", "the TFDS feature holding the text"),
      "lengths": Option((), "window lengths (tokens)", int),
      "stride": Option(256, "sliding-window stride"),
      "truncate": Option(False, "cut each document to one window (no sliding)"),
      "batch_size": Option(1, "windows per model call"),
      "min_tokens": Option(0, "skip documents shorter than this"),
      "max_documents": Option(0, "use at most this many documents (0 = all)"),
      "e2llm_window": Option(0, "E²-LLM pre-training window L: score length W with the PI scale "
                                "g = ceil(W / L) (0 = off)"),
  }

  @classmethod
  def check(cls, c):
    check_lengths(c["lengths"])
    if c["e2llm_window"] < 0:
      raise ConfigError(f"perplexity e2llm_window={c['e2llm_window']}; allowed: an integer >= 0 "
                        "(0 = off)")
    if bool(c["files"]) == bool(c["dataset"]):
      raise ConfigError("perplexity needs exactly one of files (a glob of UTF-8 text files) and "
                        "dataset (a prepared TFDS dataset such as pg19)")
    if c["batch_size"] < 1 or c["stride"] < 1:
      raise ConfigError(f"perplexity batch_size={c['batch_size']} and stride={c['stride']} "
                        "must be >= 1")

  def __init__(self, options, context):
    super().__init__(options, context)
    c, tok = self.config, context.tokenizer
    if c["dataset"]:
      self.paths, self.docs = documents.load_tfds_documents(
          c["dataset"], c["split"], c["tfds_data_dir"], c["text_key"], tok, c["min_tokens"],
          c["max_documents"])
    else:
      self.paths, self.docs = documents.load_documents(c["files"], tok, c["min_tokens"],
                                                       c["max_documents"])

  def run(self, model) -> registry.Result:
    c = self.config
    registry.warn_past_context(model, c["lengths"], "perplexity window")
    self.context.log(f"perplexity: {len(self.docs)} documents, "
                     f"{sum(map(len, self.docs))} tokens")
    results = evaluate(model, self.docs, c["lengths"], stride=c["stride"],
                       bos_id=self.context.tokenizer.bos_id, truncate=c["truncate"],
                       batch_size=c["batch_size"], log=self.context.log,
                       e2llm_window=c["e2llm_window"])
    record = {"mode": "truncated" if c["truncate"] else "sliding",
              "stride": None if c["truncate"] else c["stride"],
              "source": ({"dataset": c["dataset"], "split": c["split"]} if c["dataset"]
                         else {"files": c["files"]}),
              "documents": self.paths, "document_tokens": [len(d) for d in self.docs],
              "results": results}
    metrics = {f"ppl_{r['length']}": r["ppl"] for r in results}
    return registry.Result(metrics, record)

  @classmethod
  def figures(cls, records):
    return {"perplexity.png": plots.perplexity_figure(records)}


def check_lengths(lengths) -> None:
  if not lengths or min(lengths) < 2:
    raise ConfigError(f"lengths={list(lengths)} must list context lengths >= 2")
