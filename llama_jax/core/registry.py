"""The one registry idiom of llama_jax: named records that register themselves from their module.

Every pluggable part — RoPE methods, attention kernels, remat policies, evaluations, batch
augmentations, adapters, searches — is a package whose modules each define one record and
register it:

    # llama_jax/attention/my_kernel.py
    registry.KERNELS.register(registry.Kernel(name="my_kernel", fn=attention, ...))

The package's `__init__` calls `import_submodules`, so adding a part is one new file and nothing
else changes. Configs name parts by their registered name; `get` refuses an unknown name with
the config field, the value and the allowed names, and validation asks `names()` for what is
allowed (no list is copied anywhere).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from typing import Generic, TypeVar

from llama_jax.core.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
  """Records of one kind by name. `field` is the config key that selects one (for messages)."""

  def __init__(self, kind: str, field: str):
    self.kind, self.field = kind, field
    self._entries: dict[str, T] = {}

  def register(self, entry: T) -> T:
    """Adds `entry` under `entry.name`; a name registered twice is an error."""
    name = getattr(entry, "name", None)
    if not isinstance(name, str) or not name:
      raise TypeError(f"a {self.kind} needs a non-empty string `name`, got {name!r}")
    if name in self._entries:
      raise ValueError(f"{self.kind} {name!r} is registered twice")
    self._entries[name] = entry
    return entry

  def unregister(self, name: str) -> T:
    """Removes and returns the record `name` (for notebooks and tests that register a
    throwaway part)."""
    return self._entries.pop(name)

  def get(self, name: str) -> T:
    try:
      return self._entries[name]
    except (KeyError, TypeError):
      raise ConfigError(f"{self.field}={name!r} is not a known {self.kind}; allowed: "
                        f"{self.names()}") from None

  def names(self) -> list[str]:
    return sorted(self._entries)

  def entries(self) -> list[T]:
    return [self._entries[n] for n in self.names()]

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __len__(self) -> int:
    return len(self._entries)


def import_submodules(package: str, path: Iterable[str]) -> None:
  """Imports every module of a package (each registers its record); a package's `__main__`
  (its command line, run by `python -m`) is not one of them."""
  for info in pkgutil.iter_modules(path):
    if info.name != "__main__":
      importlib.import_module(f"{package}.{info.name}")
