"""Atomic writes: a file or a whole directory appears complete or not at all.

Everything is written under a temporary name next to the destination and renamed into place
only when complete, so an interrupted or failed command never leaves a half-written JSON, PNG,
config or checkpoint directory behind, and an existing destination is replaced whole or kept.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from llama_jax.core.errors import CheckpointError


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = False
                 ) -> Path:
  """Calls write(file object) on a temporary file next to `path`, then renames it to `path`."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise
  return path


def write_text(path: str | os.PathLike, text: str) -> Path:
  return write_atomic(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike, data: dict) -> Path:
  return write_text(path, json.dumps(data, indent=2) + "\n")


def read_json(path: str | os.PathLike) -> dict:
  path = Path(path)
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise FileNotFoundError(f"result file {path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"result file {path} is not valid JSON: {e}") from None


@contextlib.contextmanager
def atomic_directory(dst: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
  """Yields an empty temporary directory that becomes `dst` when the block exits cleanly.

  On an exception the temporary directory is deleted and `dst` is untouched. With `overwrite`,
  an existing `dst` is moved aside, the new one renamed in, and only then the old one deleted.
  """
  dst = Path(dst).absolute()
  if dst.exists() and not overwrite:
    raise CheckpointError(f"destination {dst} already exists; pass overwrite=True (--overwrite) "
                          "to replace it")
  if not dst.parent.is_dir():
    raise CheckpointError(f"destination's parent directory {dst.parent} does not exist")
  tag = uuid.uuid4().hex[:8]
  tmp = dst.parent / f".{dst.name}.tmp-{tag}"
  tmp.mkdir()
  try:
    yield tmp
    if dst.exists():
      old = dst.parent / f".{dst.name}.old-{tag}"
      os.rename(dst, old)
      os.rename(tmp, dst)
      shutil.rmtree(old) if old.is_dir() else old.unlink()
    else:
      os.rename(tmp, dst)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
