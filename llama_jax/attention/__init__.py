"""Attention kernels behind one function, chosen by `ModelConfig.attention`.

All take q[B, T, H, D], k/v[B, S, K, D] (K divides H: grouped-query attention), optional
segment ids (int[B, T] / int[B, S]; 0 = padding) and `q_offset`, the key index of the first
query (non-zero when decoding against a KV cache). Attention is always causal.
Kernels register themselves (`registry.py`, one module each); `auto` picks the best available
per backend and shape of problem. Self-Extend (`self_extend.py`) passes `grouped` operands; only
kernels that declare it take them, and the others are refused by name.
"""
from __future__ import annotations

import jax

from llama_jax.attention import registry
from llama_jax.attention.self_extend import Grouped
from llama_jax.core.errors import ConfigError
from llama_jax.core.registry import import_submodules

import_submodules(__name__, __path__)

AUTO = "auto"

# On CPU, `auto` uses xla_blocked up to this many keys and chunked beyond: measured on
# configs/bench_34m.py, xla_blocked is faster at 512-1024 tokens, chunked at 2048 (and its
# memory stays linear in the length).
CPU_BLOCKED_MAX_LEN = 1024


def names() -> list[str]:
  """Every value `model.attention` accepts: the registered kernels and `auto`."""
  return registry.KERNELS.names() + [AUTO]


def get(impl: str):
  """The registered `Kernel` record of a concrete kernel name."""
  return registry.KERNELS.get(impl)


def check_self_extend(impl: str) -> None:
  """Raises ConfigError unless kernel `impl` (or `auto`) can run Self-Extend."""
  if impl != AUTO and not get(impl).self_extend:
    raise ConfigError(
        f"model.attention={impl!r} cannot run Self-Extend (model.self_extend_window/"
        f"self_extend_group); kernels that can: {registry.self_extend_kernels() + [AUTO]}")


def resolve(impl: str, *, packed: bool = False, decoding: bool = False,
            dtype=None, seq_len: int | None = None, self_extend: bool = False) -> str:
  """The concrete kernel for `impl` on the default backend and this call's shape of problem.

  Kernels that cannot decode against a KV cache (the fused ones) hand it over to `chunked`.
  `auto` takes cuDNN on GPU for unpacked bf16/fp16 training, splash on TPU, and otherwise
  `chunked` (O(sequence) memory); on CPU `xla_blocked` (the reference with causal block
  skipping, fastest at the short lengths CPUs train on) up to CPU_BLOCKED_MAX_LEN keys,
  `chunked` beyond, and `xla` when decoding. With Self-Extend, `auto` keeps to the kernels that
  implement it: `xla` on CPU up to CPU_BLOCKED_MAX_LEN keys or when decoding, `chunked` otherwise.
  """
  backend = jax.default_backend()
  if impl != AUTO:
    return "chunked" if decoding and not get(impl).decoding else impl
  if self_extend:
    short = decoding or seq_len is None or seq_len <= CPU_BLOCKED_MAX_LEN
    return "xla" if backend == "cpu" and short else "chunked"
  if decoding:
    return "xla" if backend == "cpu" else "chunked"
  if backend == "gpu":
    low_precision = dtype is not None and jax.numpy.dtype(dtype).itemsize == 2
    return "cudnn" if (not packed and low_precision) else "chunked"
  if backend == "tpu":
    return "splash"
  return "chunked" if seq_len is not None and seq_len > CPU_BLOCKED_MAX_LEN else "xla_blocked"


def prefix_kernels() -> list[str]:
  """The `model.attention` values that can take a shared prefix of keys (and `auto`)."""
  return [k.name for k in registry.KERNELS.entries() if k.prefix] + [AUTO]


def dot_product_attention(q, k, v, *, impl: str = "xla", q_segment_ids=None,
                          kv_segment_ids=None, q_offset=0, grouped: Grouped | None = None,
                          shared_prefix: int = 0, **options):
  """Causal attention through kernel `impl`; `grouped` turns on Self-Extend; `shared_prefix`:
  the first n keys are visible to every query whatever the segment ids (prefix tuning)."""
  decoding = not (isinstance(q_offset, int) and q_offset == 0) or q.shape[1] != k.shape[1]
  name = resolve(impl, packed=q_segment_ids is not None, decoding=decoding, dtype=q.dtype,
                 seq_len=k.shape[1], self_extend=grouped is not None)
  kernel = get(name)
  options = {k_: v_ for k_, v_ in options.items() if k_ in kernel.options}
  if grouped is not None:
    if shared_prefix:
      raise ValueError("Self-Extend and a shared prefix of keys (prefix tuning) cannot be "
                       "combined: grouped positions are not defined for virtual tokens")
    check_self_extend(name)
    options["grouped"] = grouped
  if shared_prefix:
    if not kernel.prefix:
      raise ValueError(f"attention kernel {kernel.name!r} cannot take a shared prefix of keys "
                       f"(prefix tuning); use model.attention in {prefix_kernels()}")
    options["shared_prefix"] = shared_prefix
  return kernel.fn(q, k, v, q_segment_ids=q_segment_ids, kv_segment_ids=kv_segment_ids,
                   q_offset=q_offset, **options)
