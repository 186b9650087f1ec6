"""How the train and eval steps are compiled on each backend: XLA options and the loss layout.

GPU and TPU use XLA's defaults. On CPU the steps compile with XLA:CPU's YNNPACK library fusions
off (`xla_cpu_experimental_ynn_fusion_type` empty), so dots run on Eigen and reductions and
elementwise ops on XLA's own emitters. Measured on this project's benchmark model
(configs/bench_34m.py, 2-core AMD EPYC with AVX2, tcmalloc):
- attention's batched [rows, 64] x [64, keys] GEMMs run at 26 GFLOP/s in YNNPACK and 54 in Eigen
  (64 x 64 x 512 per head), and YNNPACK's fused softmax-gradient reductions ran at ~1 GB/s;
- the projections' GEMMs are ~8% faster in Eigen (e.g. 142 vs 131 GFLOP/s at 4096 x 512 x 1408);
- the one shape Eigen runs slowly, the vocabulary-wide logits matmul (77 vs 160 GFLOP/s at
  4096 x 512 x 8192), is split into `VOCAB_CHUNK` columns (`loss.py`), where it runs at 145.
Together with the attention kernel's hand-written backward (`attention/xla_blocked.py`) the
train step got 4-10% faster (minimum and median, two interleaved A/Bs of 10 and 14 steps each).
`python -m llama_jax.bench --step_compile=xla_defaults` re-measures the choice. The options are
scoped to the steps' `jax.jit`; nothing global changes.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

VOCAB_CHUNK = 1024  # logits columns per matmul on CPU


class StepCompilation(NamedTuple):
  xla_options: dict  # passed to jax.jit(compiler_options=...)
  vocab_chunk: int  # loss.cross_entropy's vocab_chunk (0: one matmul over the vocabulary)


CPU_XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
DEFAULT = StepCompilation({}, 0)


@functools.cache
def _cpu_options_known() -> bool:
  """Whether this jaxlib's XLA:CPU has the option (older ones have no YNNPACK fusions at all)."""
  try:
    jax.jit(lambda x: x + 1, compiler_options=CPU_XLA_OPTIONS).lower(
        jnp.zeros((), jnp.float32)).compile()
  except Exception:
    return False
  return True


def for_backend(backend: str | None = None) -> StepCompilation:
  """The compilation settings for `backend` (default: JAX's default backend)."""
  if (backend or jax.default_backend()) != "cpu":
    return DEFAULT
  return StepCompilation(CPU_XLA_OPTIONS if _cpu_options_known() else {}, VOCAB_CHUNK)
