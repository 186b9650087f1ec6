"""Instruction example files: a JSON array or JSON lines of objects, checked field by field.

LLM-Adapters (and alpaca) ship training sets as one JSON array (`math_10k.json`,
`commonsense_170k.json`, pretty-printed, one object spread over several lines) and test sets as
`dataset/<name>/test.json` arrays; other corpora come as JSON lines. Both are read here:

- a file whose first non-blank character is `[` is a JSON array; anything else is JSON lines
  (one object per non-blank line);
- every record must be a JSON object holding the required fields with values of the allowed
  types (`instruction`, `input`, `output` as strings for training; `instruction` and `answer`
  for test sets);
- a problem is a `DataError` naming the file, the line (and column, for broken JSON) and what is
  wrong, raised before anything is tokenized or written.

Array elements are decoded one at a time (`json.JSONDecoder.raw_decode`), so a missing field is
reported with the line where its object starts, not only an index.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Mapping

from llama_jax.core.errors import DataError

# Fields of a training example and the types each may hold.
TRAIN_FIELDS: Mapping[str, tuple[type, ...]] = {"instruction": (str,), "input": (str,),
                                                 "output": (str,)}
_WHITESPACE = " \t\n\r"


@dataclasses.dataclass(frozen=True)
class ExampleFile:
  """The records of one file, the line each starts on, and a digest of the file's bytes."""
  path: str
  records: tuple[dict, ...]
  lines: tuple[int, ...]
  digest: str

  def __len__(self) -> int:
    return len(self.records)


def _skip(text: str, i: int) -> int:
  while i < len(text) and text[i] in _WHITESPACE:
    i += 1
  return i


class _Lines:
  """Line numbers of increasing character offsets, counted incrementally (O(file) in total)."""

  def __init__(self, text: str):
    self.text, self.pos, self.line = text, 0, 1

  def at(self, pos: int) -> int:
    if pos < self.pos:  # not expected: offsets only grow
      return self.text.count("\n", 0, pos) + 1
    self.line += self.text.count("\n", self.pos, pos)
    self.pos = pos
    return self.line


def _broken(path: str, text: str, e: json.JSONDecodeError) -> DataError:
  line = text.count("\n", 0, e.pos) + 1
  col = e.pos - (text.rfind("\n", 0, e.pos) + 1) + 1
  return DataError(f"{path}:{line}:{col}: broken JSON ({e.msg}); fix or remove the record")


def _array_records(path: str, text: str):
  """(line, value) of each element of the JSON array `text`."""
  decoder = json.JSONDecoder()
  lines = _Lines(text)
  i = _skip(text, 0) + 1  # past '['
  i = _skip(text, i)
  if i < len(text) and text[i] == "]":
    end = i + 1
  else:
    while True:
      try:
        value, end = decoder.raw_decode(text, i)
      except json.JSONDecodeError as e:
        raise _broken(path, text, e) from None
      yield lines.at(i), value
      i = _skip(text, end)
      if i < len(text) and text[i] == ",":
        i = _skip(text, i + 1)
        continue
      if i < len(text) and text[i] == "]":
        end = i + 1
        break
      raise _broken(path, text, json.JSONDecodeError("expected ',' or ']' after an element",
                                                     text, min(i, len(text))))
  rest = _skip(text, end)
  if rest < len(text):
    raise _broken(path, text, json.JSONDecodeError("extra data after the array", text, rest))


def _jsonl_records(path: str, text: str):
  """(line, value) of each non-blank line of JSON lines `text`."""
  for number, line in enumerate(text.split("\n"), start=1):
    if not line.strip():
      continue
    try:
      yield number, json.loads(line)
    except json.JSONDecodeError as e:
      raise DataError(f"{path}:{number}:{e.colno}: broken JSON ({e.msg}); each line must be "
                      "one JSON object") from None


def _check(path: str, line: int, record, required: Mapping[str, tuple[type, ...]]) -> None:
  if not isinstance(record, dict):
    raise DataError(f"{path}:{line}: a record is a {type(record).__name__}, not a JSON object "
                    f"with the fields {sorted(required)}")
  missing = [k for k in required if k not in record]
  if missing:
    raise DataError(f"{path}:{line}: the record lacks the field(s) {missing}; every record "
                    f"needs {sorted(required)} (have {sorted(record)})")
  for key, types in required.items():
    if not isinstance(record[key], types) or isinstance(record[key], bool):
      allowed = " or ".join("string" if t is str else "number" for t in types)
      raise DataError(f"{path}:{line}: field {key!r} is {json.dumps(record[key])[:60]}; "
                      f"allowed: a {allowed}")


def read_examples(path: str | os.PathLike,
                  required: Mapping[str, tuple[type, ...]] = TRAIN_FIELDS) -> ExampleFile:
  """The records of a JSON array or JSON lines file, each checked for the `required` fields."""
  path = os.fspath(path)
  full = os.path.abspath(os.path.expanduser(path))
  try:
    st = os.stat(full)
  except FileNotFoundError:
    raise DataError(f"instruction file {path!r} does not exist") from None
  if not os.path.isfile(full):
    raise DataError(f"instruction file {path!r} is not a file")
  return _read_cached(full, path, st.st_size, st.st_mtime_ns, tuple(
      (k, tuple(v)) for k, v in required.items()))


@functools.lru_cache(maxsize=4)
def _read_cached(full: str, shown: str, size: int, mtime_ns: int,
                 required: tuple[tuple[str, tuple[type, ...]], ...]) -> ExampleFile:
  """Parsed once per (file, size, mtime): the trainer reads a file for its tokenizer and for
  each of its iterators."""
  del size, mtime_ns  # part of the cache key only
  with open(full, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8")
  except UnicodeDecodeError as e:
    line = raw.count(b"\n", 0, e.start) + 1
    raise DataError(f"{shown}:{line}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  text = text.lstrip("\ufeff")
  first = _skip(text, 0)
  records = _array_records(shown, text) if text[first:first + 1] == "[" else \
      _jsonl_records(shown, text)
  fields = dict(required)
  out, lines = [], []
  for line, record in records:
    _check(shown, line, record, fields)
    out.append(record)
    lines.append(line)
  if not out:
    raise DataError(f"instruction file {shown!r} holds no records")
  return ExampleFile(shown, tuple(out), tuple(lines), hashlib.sha256(raw).hexdigest()[:16])
