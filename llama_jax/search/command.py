"""What `python -m llama_jax.search` does, as a function: `run(Request) -> search record`.

Everything that can be checked without the model's weights is checked first — the method and
its options, the model's head_dim (DCIS needs head_dim/2 a power of two), the scale and the start
factors (their length), the tokenizer, the documents (each must hold target_len − 1 tokens: a
target longer than every document is an error naming the shortfall), a journal in `out` made
under other settings — and only then are the weights loaded and the search run. So a bad request
writes nothing.

Defaults follow DCIS's `run.sh` (§9 of the reference notes): the YaRN-equivalent start with
β_fast 32 / β_slow 1, s = target_len / L where L is the checkpoint's original context (its rope's
`original_max_position_embeddings`, else its `max_position_embeddings`), one document.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from llama_jax.core.errors import ConfigError, UsageError
from llama_jax.search import driver, registry
from llama_jax.search import factors as factors_lib


@dataclasses.dataclass
class Request:
  method: str
  checkpoint: str
  out: str
  target_len: int
  tokenizer: str = ""  # default: a training workdir's own
  files: str = ""  # a glob of UTF-8 text files, one document each ...
  dataset: str = ""  # ... or a prepared TFDS dataset
  split: str = "validation"
  tfds_data_dir: str = ""
  text_key: str = "text"
  factor: float | None = None  # s; default target_len / original_length
  original_length: int | None = None  # L; default from the checkpoint
  init: str = "yarn"  # yarn | ntk | ones | a JSON file with long_factor
  beta_fast: float = 32.0
  beta_slow: float = 1.0
  max_documents: int = 1
  batch_size: int = 1
  dtype: str = ""
  attention: str = ""
  options: dict[str, Any] = dataclasses.field(default_factory=dict)
  progress: bool | None = None  # None: a bar on a terminal only


def _tokenizer(req: Request, vocab_size: int):
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.interop import convert
  path = req.tokenizer or convert.tokenizer_of(req.checkpoint) or ""
  if not path:
    raise UsageError("--tokenizer is required (a sentencepiece .model file; a training workdir "
                     "or a converted checkpoint that keeps its tokenizer.model provides its own)")
  tok = tokenizer_lib.Tokenizer(path)
  tokenizer_lib.check_vocab(tok, vocab_size)
  return tok, path


def _documents(req: Request, tok):
  from llama_jax.data import documents
  if bool(req.files) == bool(req.dataset):
    raise UsageError("give exactly one of --files (a glob of UTF-8 text files) and --dataset "
                     "(a prepared TFDS dataset such as pg19)")
  if req.dataset:
    names, docs = documents.load_tfds_documents(req.dataset, req.split, req.tfds_data_dir,
                                                req.text_key, tok)
  else:
    names, docs = documents.load_documents(req.files, tok)
  from llama_jax.search.objective import truncated_documents
  return truncated_documents(docs, names, req.target_len, req.max_documents)


def prepare(req: Request):
  """Checks the request (no weights loaded, nothing written); returns what `run` needs."""
  from llama_jax.interop import convert
  if not req.out:
    raise UsageError("--out (the search's directory) is required")
  if not req.checkpoint:
    raise UsageError("--checkpoint is required (a converted checkpoint or a training workdir)")
  method = registry.get(req.method)
  options = registry.resolve_options(method, req.options)
  if not (isinstance(req.target_len, int) and req.target_len >= 2):
    raise UsageError(f"--target_len={req.target_len!r} must be an integer >= 2")
  for name in ("max_documents", "batch_size"):
    if getattr(req, name) < (0 if name == "max_documents" else 1):
      raise UsageError(f"--{name}={getattr(req, name)} is out of range")
  cfg = convert.load_config(req.checkpoint)
  n_factors = cfg.head_dim // 2
  method.check(options, n_factors)
  original = req.original_length or cfg.rope.original_length or cfg.max_position_embeddings
  factor = float(req.factor) if req.factor is not None else req.target_len / original
  if not factor > 0:
    raise ConfigError(f"--factor={req.factor!r} must be > 0")
  start = factors_lib.start_factors(req.init, factor, cfg.head_dim, cfg.rope.rope_theta,
                                    original, req.beta_fast, req.beta_slow)
  overrides = {}
  if req.attention:
    overrides["attention"] = req.attention
  cfg.replace(**overrides)  # validates the kernel name before anything is loaded
  tok, tok_path = _tokenizer(req, cfg.vocab_size)
  names, docs = _documents(req, tok)
  settings = {
      "checkpoint": str(Path(req.checkpoint).absolute()), "tokenizer": tok_path,
      "documents": names, "document_tokens": [len(d) for d in docs],
      "target_len": req.target_len, "init": req.init, "beta_fast": req.beta_fast,
      "beta_slow": req.beta_slow, "dtype": req.dtype or "checkpoint",
  }
  driver.check_resumable(req.out, req.method, options, start, factor, original,
                         cfg.rope.rope_theta, settings)
  return {"method": req.method, "options": options, "factor": factor,
          "original_length": original, "rope_theta": cfg.rope.rope_theta, "start": start,
          "settings": settings, "docs": docs, "bos_id": tok.bos_id, "overrides": overrides}


def run(req: Request) -> dict:
  """Checks the request, loads the model, runs the search; returns the search.json record."""
  from llama_jax.interop import convert
  from llama_jax.search.objective import PerplexityObjective
  p = prepare(req)
  model = convert.load_model(req.checkpoint, dtype=req.dtype or None, **p["overrides"])
  objective = PerplexityObjective(model, p["docs"], req.target_len, p["factor"],
                                  p["original_length"], p["bos_id"], req.batch_size)
  record = driver.search(p["method"], objective, p["start"], req.out, options=p["options"],
                         factor=p["factor"], original_length=p["original_length"],
                         rope_theta=p["rope_theta"], settings=p["settings"],
                         bar=req.progress)
  return record
