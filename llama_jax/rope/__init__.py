"""Context-extension methods for rotary position embeddings, one module each.

`registry` maps a `rope_type` to its `RopeMethod`; `embedding` turns a `RopeConfig` and positions
(and optional per-example `inputs.RopeInputs`, traced arrays) into cos/sin. Every module in this
package is imported here, so a new method is one new file that calls `registry.register`.
"""
from llama_jax.core.registry import import_submodules
from llama_jax.rope import registry
from llama_jax.rope.config import RopeConfig
from llama_jax.rope.embedding import apply, cos_sin, frequencies
from llama_jax.rope.inputs import RopeInputs

import_submodules(__name__, __path__)

get = registry.get
names = registry.names
validate = registry.validate

__all__ = ["RopeConfig", "RopeInputs", "apply", "cos_sin", "frequencies", "get", "names",
           "registry", "validate"]
