"""llama_jax: LLaMA pretraining, RoPE context extension and PEFT in JAX/Flax.

Top-level names are imported on first use, so `import llama_jax` (and importing any submodule)
stays cheap and never pulls in orbax, safetensors or torch:

  model = llama_jax.load_hf("path/to/hf_llama")   # a Llama; model(input_ids) -> logits
  model = llama_jax.load_hf("path/to/hf_llama", adapter="path/to/peft_adapter")  # + LoRA, ...
  llama_jax.Llama, llama_jax.ModelConfig

Importing the package tunes glibc's malloc for XLA:CPU's per-step buffers before any XLA thread
exists (`core/allocator.py`; `LLAMA_JAX_MALLOC=system` leaves it alone).
"""
from __future__ import annotations

import importlib

from llama_jax.core import allocator as _allocator

_allocator.configure()

_EXPORTS = {
    "load_hf": "llama_jax.convert",
    "load_model": "llama_jax.convert",
    "Llama": "llama_jax.model.llama",
    "ModelConfig": "llama_jax.model.config",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
  if name in _EXPORTS:
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'llama_jax' has no attribute {name!r}")


def __dir__():
  return sorted(list(globals()) + __all__)
