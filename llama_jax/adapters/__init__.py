"""PEFT adapters installed onto a model from outside, one module each (`registry.py` says what
an adapter is): LoRA with rsLoRA and DoRA (`lora`), series and parallel bottleneck adapters
(`series`, `parallel`), prefix tuning (`prefix`). `config.adapter.name` selects one."""
from llama_jax.adapters import registry
from llama_jax.adapters.registry import Adapter, AdapterParam, build, from_config, get, names
from llama_jax.core.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["Adapter", "AdapterParam", "build", "from_config", "get", "names", "registry"]
