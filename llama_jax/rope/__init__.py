"""Context-extension methods for rotary position embeddings, one module each.

`registry` maps a `rope_type` to its `RopeMethod`; `embedding` turns a `RopeConfig` and positions
into cos/sin. Every module in this package is imported here, so a new method is one new file
that calls `registry.register`.
"""
import importlib
import pkgutil

from llama_jax.rope import registry
from llama_jax.rope.config import RopeConfig
from llama_jax.rope.embedding import apply, cos_sin

for _info in pkgutil.iter_modules(__path__):
  importlib.import_module(f"{__name__}.{_info.name}")

get = registry.get
names = registry.names
validate = registry.validate

__all__ = ["RopeConfig", "apply", "cos_sin", "get", "names", "registry", "validate"]
