"""Atomic result files: written to a temporary name in the destination directory, then renamed,
so an interrupted or failed evaluation never leaves a half-written JSON or PNG behind."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


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


def write_json(path: str | os.PathLike, data: dict) -> Path:
  return write_atomic(path, lambda f: f.write(json.dumps(data, indent=2) + "\n"))


def read_json(path: str | os.PathLike) -> dict:
  path = Path(path)
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise FileNotFoundError(f"result file {path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"result file {path} is not valid JSON: {e}") from None
