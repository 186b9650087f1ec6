"""Evaluations, one module each, registered by name (`registry.py`): held-out loss
(`heldout`), sliding-window perplexity (`perplexity`), passkey retrieval (`passkey`),
LLM-Adapters' math and commonsense accuracy (`math`, `commonsense`; their shared machinery in
`tasks`, answer extraction in `answers`); plots (`plots`). The same classes serve
`python -m llama_jax.evaluate` and `config.evals` in training.
"""
from llama_jax.core.registry import import_submodules
from llama_jax.evals import registry

import_submodules(__name__, __path__)

get = registry.get
names = registry.names

__all__ = ["get", "names", "registry"]
