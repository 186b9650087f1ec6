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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from llama_jax.core.errors import CheckpointError, DataError, UsageError


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
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"result file {path} is not valid JSON: {e}") from None


def check_output_directory(path: str | os.PathLike, what: str) -> Path:
  """Raises UsageError unless `path` is a directory, or one that can be created, that this
  process can write into; creates nothing (a command checks its output location before it
  does any work, so a bad one fails in a second and leaves nothing behind)."""
  p = Path(os.path.expanduser(os.fspath(path)))
  if p.exists() and not p.is_dir():
    raise UsageError(f"{what}={os.fspath(path)} is a file, not a directory; choose a directory "
                     "path (it is created if missing)")
  existing = p.absolute()
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise UsageError(f"{what}={os.fspath(path)} cannot be created: {existing} is a file")
  try:  # a real probe: os.access trusts mode bits, which root ignores and /proc does not have
    os.rmdir(tempfile.mkdtemp(prefix=".llama_jax-probe-", dir=existing))
  except OSError as e:
    raise UsageError(f"{what}={os.fspath(path)} cannot be written: creating a directory in "
                     f"{existing} fails ({e.strerror}); choose a writable location") from None
  return p


def check_output_file(path: str | os.PathLike, what: str) -> Path:
  """Like `check_output_directory` for a file to be written: not a directory, and its
  directory writable (or creatable); creates nothing."""
  p = Path(os.path.expanduser(os.fspath(path)))
  if p.is_dir():
    raise UsageError(f"{what}={os.fspath(path)} is a directory; give a file path")
  parent = p.absolute().parent
  existing = parent
  while not existing.exists():
    existing = existing.parent
  if not existing.is_dir():
    raise UsageError(f"{what}={os.fspath(path)} cannot be written: {existing} is a file, not a "
                     "directory")
  check_output_directory(parent, what)
  return p


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
