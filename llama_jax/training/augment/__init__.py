"""Batch augmentations inside the jitted train step, one module each (`registry.py` says what
one is); `config.augment.name` selects one."""
from llama_jax.core.registry import import_submodules
from llama_jax.training.augment import registry

import_submodules(__name__, __path__)

names = registry.names
transform_for = registry.transform_for

__all__ = ["names", "registry", "transform_for"]
