"""RoPE factor searches: find the per-pair rescale factors λ that minimise long-context perplexity.

One module per method, registered by name (`registry.py`): `dcis` (divide-and-conquer
incremental search, Yang et al. 2025) and `evolution` (LongRoPE's evolutionary search, Ding et
al. 2024, as the DCIS authors run it as their baseline). Both minimise an objective λ → perplexity
(`objective.py`; the model-backed one scores truncated documents at the target length); every
evaluation is journaled (`journal.py`) so an interrupted search resumes; `driver.py` runs a
method and writes `search.json` and the HF `rope_parameters` file `rope.json` (`factors.py`).
Command line: `python -m llama_jax.search` (`__main__.py`).
"""
from llama_jax.core.registry import import_submodules
from llama_jax.search import registry

import_submodules(__name__, __path__)

get = registry.get
names = registry.names

__all__ = ["get", "names", "registry"]
