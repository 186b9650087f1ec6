"""Where documents come from: local files (a glob, or the Python standard library) or TFDS.

A split of documents, whatever its origin, is a `TextSplit`: a random-access sequence of texts
with a fingerprint that changes whenever its content may have changed. Local files are first
written into a TFDS ArrayRecord dataset (`text_builder.py`); catalog datasets (`pg19`, `c4`,
...) are read in place with `tfds.data_source` (random access, no TensorFlow), which needs them
prepared in the ArrayRecord format under `data.tfds_data_dir`.

The held-out split, when no real split is named, is a deterministic subset of the documents
chosen by a hash of each document's key (its path, or its index in a TFDS split): adding a file
to a corpus does not move the other files between train and held-out.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import os
import sysconfig
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from llama_jax.core.errors import DataError

# Directories of the standard library that are not its own sources, or are test data (which
# includes deliberately malformed files).
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test",
                              "__pycache__"})


class DataWarning(UserWarning):
  """A data problem that was worked around (for example a file skipped as not UTF-8)."""


@dataclasses.dataclass(frozen=True)
class LocalCorpus:
  """Files of a local corpus, sorted; `description` names the glob for error messages."""
  description: str
  root: str
  files: tuple[str, ...]


def stdlib_corpus() -> LocalCorpus:
  """The `.py` sources of the running interpreter's standard library (no tests, no packages)."""
  root = sysconfig.get_paths()["stdlib"]
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in STDLIB_SKIP_DIRS)
    files.extend(os.path.join(dirpath, f) for f in filenames if f.endswith(".py"))
  return LocalCorpus(f"{root}/**/*.py (the Python standard library)", root, tuple(sorted(files)))


def glob_corpus(pattern: str) -> LocalCorpus:
  """Regular files matching `pattern` (`**` recurses; `~` expands), sorted."""
  expanded = os.path.expanduser(pattern)
  files = sorted(os.path.abspath(p) for p in glob.glob(expanded, recursive=True)
                 if os.path.isfile(p))
  if not files:
    raise DataError(f"data.files={pattern!r} matches no file; give a glob of UTF-8 text files "
                    "(e.g. 'corpus/**/*.txt'), or files='' to use data.dataset")
  root = os.path.commonpath(files) if len(files) > 1 else os.path.dirname(files[0])
  if os.path.isfile(root):
    root = os.path.dirname(root)
  return LocalCorpus(f"data.files={pattern!r}", root, tuple(files))


def file_stats(corpus: LocalCorpus) -> list[tuple[str, int, int]]:
  """(path, size, mtime_ns) of every file: what the prepared-data fingerprint is made of."""
  out = []
  for path in corpus.files:
    st = os.stat(path)
    out.append((path, st.st_size, st.st_mtime_ns))
  return out


def read_text(path: str) -> str | None:
  """The file's text, or None (with a DataWarning naming it) when it is not valid UTF-8."""
  with open(path, "rb") as f:
    raw = f.read()
  try:
    return raw.decode("utf-8")
  except UnicodeDecodeError as e:
    warnings.warn(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); skipped",
                  DataWarning, stacklevel=2)
    return None


@dataclasses.dataclass
class ScanResult:
  documents: list[tuple[str, str]]  # (key = path relative to the corpus root, absolute path)
  skipped_non_utf8: list[str]
  empty: int


def scan_files(corpus: LocalCorpus, max_documents: int = 0) -> ScanResult:
  """Keeps the files that decode as UTF-8 and hold non-blank text (up to `max_documents`).

  Raises DataError when nothing is left, naming the glob and why.
  """
  documents, skipped, empty = [], [], 0
  for path in corpus.files:
    if max_documents and len(documents) >= max_documents:
      break
    text = read_text(path)
    if text is None:
      skipped.append(path)
    elif not text.strip():
      empty += 1
    else:
      documents.append((os.path.relpath(path, corpus.root), path))
  if not documents:
    raise DataError(
        f"{corpus.description}: no usable document among {len(corpus.files)} files "
        f"({len(skipped)} not UTF-8, {empty} empty or blank); point data.files at UTF-8 text")
  return ScanResult(documents, skipped, empty)


def _unit_hash_of_strings(keys: Sequence[str]) -> np.ndarray:
  out = np.empty(len(keys), np.float64)
  for i, key in enumerate(keys):
    digest = hashlib.sha256(b"llama_jax-heldout:" + key.encode("utf-8")).digest()
    out[i] = int.from_bytes(digest[:8], "little") / 2.0**64
  return out


def _unit_hash_of_indices(n: int) -> np.ndarray:
  """A splitmix64 hash of 0..n-1 mapped to [0, 1): vectorised for splits of millions of docs."""
  with np.errstate(over="ignore"):
    z = np.arange(n, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def heldout_mask(keys: Sequence[str] | int, fraction: float) -> np.ndarray:
  """bool[n]: which documents are held out, from a hash of their keys (or indices, for an int).

  With 0 < fraction and at least two documents, both sides get at least one document.
  """
  if not 0.0 <= fraction < 1.0:
    raise DataError(f"data.heldout_fraction={fraction!r}; allowed: [0, 1)")
  u = _unit_hash_of_indices(keys) if isinstance(keys, int) else _unit_hash_of_strings(keys)
  mask = u < fraction
  if fraction > 0 and len(u) >= 2:
    if not mask.any():
      mask[np.argmin(u)] = True
    if mask.all():
      mask[np.argmax(u)] = False
  return mask


@dataclasses.dataclass
class TextSplit:
  """A random-access split of documents: `len(split)`, `split.texts(indices)` -> list[str]."""
  name: str
  fingerprint: str
  size: int
  read: Callable[[np.ndarray], list[str]]  # texts of these document indices

  def __len__(self):
    return self.size

  def texts(self, indices) -> list[str]:
    return self.read(np.asarray(indices, dtype=np.int64))

  def iter_chunks(self, chunk: int = 256):
    for start in range(0, self.size, chunk):
      yield self.texts(np.arange(start, min(start + chunk, self.size)))


def _decode_text(value, key: str, where: str) -> str:
  if isinstance(value, bytes):
    try:
      return value.decode("utf-8")
    except UnicodeDecodeError as e:
      raise DataError(f"{where}: feature {key!r} is not UTF-8 text ({e})") from None
  if isinstance(value, str):
    return value
  if isinstance(value, np.ndarray) and value.dtype.kind in "SUO" and value.ndim == 0:
    return _decode_text(value.item(), key, where)
  raise DataError(f"{where}: feature {key!r} is a {type(value).__name__}, not text; set "
                  "data.text_key to the dataset's text feature")


def record_reader(source, text_key: str, where: str,
                  index_map: np.ndarray | None = None) -> Callable[[np.ndarray], list[str]]:
  """Reads feature `text_key` of records of a random-access data source as text."""

  def read(indices: np.ndarray) -> list[str]:
    idx = indices if index_map is None else index_map[indices]
    idx = [int(i) for i in idx]
    records = source.__getitems__(idx) if hasattr(source, "__getitems__") else \
        [source[i] for i in idx]
    out = []
    for rec in records:
      if not isinstance(rec, dict) or text_key not in rec:
        have = sorted(rec) if isinstance(rec, dict) else type(rec).__name__
        raise DataError(f"{where}: records have no feature {text_key!r} (they have {have}); "
                        "set data.text_key")
      out.append(_decode_text(rec[text_key], text_key, where))
    return out

  return read


_PREPARE_HINT = (
    "Random access without TensorFlow needs the dataset prepared in the ArrayRecord format. On a "
    "machine with TensorFlow and the dataset's dependencies run\n"
    "  tfds build {name} --data_dir={data_dir} --file_format=array_record\n"
    "(or `tfds.builder('{name}', data_dir=..., file_format='array_record')"
    ".download_and_prepare()`) and copy the resulting {name}/<version>/ folder under "
    "data.tfds_data_dir; or use data.files for local text files.")


def open_tfds(name: str, data_dir: str, split: str):
  """(data source, number of records, version) of a prepared TFDS split.

  Raises DataError saying how to prepare the dataset when it is missing or not ArrayRecord.
  """
  import tensorflow_datasets as tfds  # imported lazily: it is slow and only needed here

  data_dir = os.path.expanduser(data_dir) if data_dir else None
  shown_dir = data_dir or "~/tensorflow_datasets (the TFDS default)"
  hint = _PREPARE_HINT.format(name=name.split(":")[0], data_dir=data_dir or "~/tensorflow_datasets")
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f"data.dataset={name!r}: no prepared TFDS dataset of that name under "
                    f"data.tfds_data_dir={shown_dir!r}. {hint}") from None
  if not builder.is_prepared():
    raise DataError(f"data.dataset={name!r} is not prepared under data.tfds_data_dir="
                    f"{shown_dir!r} (no {builder.data_path}/dataset_info.json). {hint}")
  file_format = getattr(builder.info.file_format, "value", builder.info.file_format)
  if file_format != "array_record":
    raise DataError(f"data.dataset={name!r} under {shown_dir!r} is prepared as {file_format}, "
                    f"which needs TensorFlow to read. {hint}")
  base_split = split.split("[")[0]
  if base_split not in builder.info.splits:
    raise DataError(f"data.dataset={name!r} has no split {base_split!r}; its splits are "
                    f"{sorted(builder.info.splits)} (set data.train_split / data.eval_split)")
  try:
    source = builder.as_data_source(split=split)
  except (ValueError, AssertionError, FileNotFoundError) as e:
    raise DataError(f"data.dataset={name!r} split {split!r} under {shown_dir!r} cannot be read: "
                    f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
  return source, len(source), str(builder.info.version)


def tfds_fingerprint(name: str, data_dir: str, split: str, version: str, size: int,
                     extra: dict) -> str:
  """Identity of a prepared TFDS split: name, location, version, split, size, read settings."""
  payload = repr((name, os.path.abspath(os.path.expanduser(data_dir)) if data_dir else "",
                  version, split, size, sorted(extra.items())))
  return hashlib.sha256(payload.encode()).hexdigest()[:16]
