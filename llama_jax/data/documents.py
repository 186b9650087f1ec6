"""Whole documents for evaluation: UTF-8 files by glob, or a prepared TFDS split, tokenized.

Evaluations that score whole documents (sliding-window perplexity, searches over RoPE factors)
read them here: token lists without BOS/EOS, in a fixed order (sorted paths, or the split's
order), optionally only those of at least `min_tokens`, at most `max_documents` of them.
"""
from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from llama_jax.core.errors import DataError
from llama_jax.data import sources


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
    raise DataError(f"none of the {seen} documents of {where} has at least "
                     f"{max(1, min_tokens)} tokens (min_tokens={min_tokens})")
  return names, docs


def load_documents(pattern: str, tokenizer, min_tokens: int = 0, max_documents: int = 0
                   ) -> tuple[list[str], list[list[int]]]:
  """(paths, token lists without BOS/EOS) of the UTF-8 files matching `pattern`, sorted by path;
  documents shorter than `min_tokens` are skipped, at most `max_documents` are kept."""
  paths = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
  if not paths:
    raise DataError(f"files={pattern!r} matches no file; give a glob of UTF-8 text files")

  def texts():
    for path in paths:
      try:
        yield path, Path(path).read_text(encoding="utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e}); files must select text files"
                        ) from None

  return _tokenize_documents(texts(), tokenizer, min_tokens, max_documents, repr(pattern))


def load_tfds_documents(name: str, split: str, data_dir: str, text_key: str, tokenizer,
                        min_tokens: int = 0, max_documents: int = 0
                        ) -> tuple[list[str], list[list[int]]]:
  """Like `load_documents` for a prepared TFDS split read in place (ArrayRecord, no TensorFlow),
  in the split's order."""
  source, size, _ = sources.open_tfds(name, data_dir, split)
  where = f"dataset={name!r} split {split!r}"
  read = sources.record_reader(source, text_key, where)

  def texts(chunk=64):
    for start in range(0, size, chunk):
      idx = np.arange(start, min(start + chunk, size))
      yield from zip((f"{name}:{split}[{i}]" for i in idx), read(idx))

  return _tokenize_documents(texts(), tokenizer, min_tokens, max_documents, where)
