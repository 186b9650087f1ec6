"""Recipes by name or by path, so `--config=yarn_13b` works from any directory.

A recipe is a Python file whose `get_config()` returns the training ConfigDict. The project's
recipes live in the repository's top-level `configs/`; an installed (non-editable) package
carries a copy in `llama_jax/recipes/` (setup.py's build step puts it there). `--config` takes a
path (`configs/yarn_13b.py`, as always) or a bare recipe name (`yarn_13b`), optionally followed by
`:<argument>` for recipes whose `get_config(arg)` takes one.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from llama_jax.core.errors import UsageError

_PACKAGE = Path(__file__).resolve().parents[1]  # the llama_jax directory


def directories() -> list[Path]:
  """Where recipes are looked up: a checkout's configs/, then the installed copy."""
  found = [_PACKAGE.parent / "configs", _PACKAGE / "recipes"]
  return [d for d in found if d.is_dir()]


def names() -> list[str]:
  return sorted({p.stem for d in directories() for p in d.glob("*.py") if p.stem != "__init__"})


def path(name_or_path: str) -> str:
  """The file of a recipe given by path or bare name; a `:argument` suffix is kept."""
  spec, sep, arg = name_or_path.partition(":")
  if os.path.exists(os.path.expanduser(spec)) or os.sep in spec or spec.endswith(".py"):
    return name_or_path
  for directory in directories():
    candidate = directory / f"{spec}.py"
    if candidate.is_file():
      return str(candidate) + sep + arg
  raise UsageError(f"--config={name_or_path!r} is neither a file nor a known recipe; recipes: "
                   f"{names()}")


def resolve_argv(argv: list[str]) -> list[str]:
  """argv with a bare recipe name in `--config=NAME` (or `--config NAME`) replaced by its path."""
  out, i = list(argv), 0
  while i < len(out):
    arg = out[i]
    if arg.startswith("--config="):
      out[i] = "--config=" + path(arg[len("--config="):])
    elif arg == "--config" and i + 1 < len(out):
      out[i + 1] = path(out[i + 1])
      i += 1
    i += 1
  return out


def module(name_or_path: str):
  """The recipe's module (its `get_config`, `DEVICES`, docstring ...)."""
  file = path(name_or_path).partition(":")[0]
  module_spec = importlib.util.spec_from_file_location(f"_recipe_{Path(file).stem}", file)
  recipe = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(recipe)
  return recipe


def load(name_or_path: str):
  """The ConfigDict of a recipe (`get_config(argument)` when a `:argument` is given)."""
  arg = path(name_or_path).partition(":")[2]
  recipe = module(name_or_path)
  return recipe.get_config(arg) if arg else recipe.get_config()
