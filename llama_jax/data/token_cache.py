"""Tokenized documents, computed once per (split, tokenizer) and memory-mapped afterwards.

A split is tokenized in one pass (SentencePiece's own threads, in chunks, so memory stays
bounded) into `<cache_dir>/tokens/<key>/`: `tokens.bin` (all documents' ids back to back, uint16
when the vocabulary fits, else uint32), `offsets.npy` (int64[n+1], document j is
`tokens[offsets[j]:offsets[j+1]]`) and `meta.json`. The key covers the split's fingerprint and
the tokenizer's, so a new tokenizer or changed corpus re-tokenizes and nothing else does.
BOS/EOS are not stored: the packer adds them as the config says.

Loading is a memory map, so a worker process or a restart costs nothing, and rows can be cut
from any document by random access (`packing.py`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time

import numpy as np

from llama_jax.core.errors import DataError

FORMAT_VERSION = 1
log = logging.getLogger(__name__)


@dataclasses.dataclass
class TokenizedDocs:
  """Documents as one flat id array plus offsets; `doc(j)` is document j's ids (no BOS/EOS)."""
  tokens: np.ndarray
  offsets: np.ndarray
  fingerprint: str = ""
  path: str | None = None  # the cache directory when memory-mapped (pickled as the path)

  def __post_init__(self):
    self.offsets = np.asarray(self.offsets, dtype=np.int64)
    if self.offsets.ndim != 1 or len(self.offsets) < 1 or self.offsets[0] != 0 or \
        np.any(np.diff(self.offsets) < 0) or self.offsets[-1] != len(self.tokens):
      raise DataError(f"tokenized documents {self.path or ''}: offsets are not a valid "
                      "0..len(tokens) partition; delete the cache directory and run again")

  @classmethod
  def from_lists(cls, docs, fingerprint: str = "") -> TokenizedDocs:
    """In-memory documents (lists or arrays of ids)."""
    lengths = [len(d) for d in docs]
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    flat = np.concatenate([np.asarray(d, dtype=np.int64) for d in docs]) if docs else \
        np.zeros(0, np.int64)
    if not fingerprint:
      fingerprint = hashlib.sha256(flat.tobytes() + offsets.tobytes()).hexdigest()[:16]
    return cls(flat.astype(np.uint32), offsets, fingerprint)

  @classmethod
  def open(cls, path: str) -> TokenizedDocs:
    with open(os.path.join(path, "meta.json")) as f:
      meta = json.load(f)
    offsets = np.load(os.path.join(path, "offsets.npy"))
    n = int(offsets[-1])
    tokens = np.memmap(os.path.join(path, "tokens.bin"), dtype=meta["dtype"], mode="r",
                       shape=(n,)) if n else np.zeros(0, meta["dtype"])
    return cls(tokens, offsets, meta["key"], path)

  def __getstate__(self):
    if self.path is not None:  # a memmap would pickle as a full copy of the corpus
      return {"path": self.path}
    return dataclasses.asdict(self)

  def __setstate__(self, state):
    if set(state) == {"path"}:
      other = TokenizedDocs.open(state["path"])
      state = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)}
    for name, value in state.items():
      setattr(self, name, value)

  def __len__(self):
    return len(self.offsets) - 1

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def doc(self, j: int) -> np.ndarray:
    return self.tokens[self.offsets[j]:self.offsets[j + 1]]


def cache_key(split_fingerprint: str, tokenizer_fingerprint: str) -> str:
  payload = f"{FORMAT_VERSION}|{split_fingerprint}|{tokenizer_fingerprint}"
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def tokenize_split(split, tokenizer, cache_root: str, chunk: int = 512) -> TokenizedDocs:
  """The split's documents tokenized with `tokenizer`, from the cache or built into it."""
  key = cache_key(split.fingerprint, tokenizer.fingerprint)
  dest = os.path.join(cache_root, "tokens", key)
  if not os.path.exists(os.path.join(dest, "meta.json")):
    _build(split, tokenizer, dest, key, chunk)
  return TokenizedDocs.open(dest)


def _build(split, tokenizer, dest: str, key: str, chunk: int) -> None:
  dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{key}-")
  start = time.time()
  try:
    offsets = [0]
    with open(os.path.join(tmp, "tokens.bin"), "wb") as f:
      for texts in split.iter_chunks(chunk):
        for ids in tokenizer.encode_batch(texts, bos=False, eos=False):
          np.asarray(ids, dtype=dtype).tofile(f)
          offsets.append(offsets[-1] + len(ids))
    np.save(os.path.join(tmp, "offsets.npy"), np.asarray(offsets, dtype=np.int64))
    meta = {"key": key, "split": split.name, "split_fingerprint": split.fingerprint,
            "tokenizer": tokenizer.path, "tokenizer_fingerprint": tokenizer.fingerprint,
            "dtype": np.dtype(dtype).name, "documents": len(offsets) - 1,
            "tokens": int(offsets[-1])}
    with open(os.path.join(tmp, "meta.json"), "w") as f:
      json.dump(meta, f, indent=1)
    try:
      os.rename(tmp, dest)
    except OSError:
      if not os.path.exists(os.path.join(dest, "meta.json")):
        raise
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  log.info("Tokenized %s split: %d documents, %d tokens in %.1fs -> %s", split.name,
           len(offsets) - 1, offsets[-1], time.time() - start, dest)
