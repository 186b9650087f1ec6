"""The process heap for CPU steps: glibc malloc told to keep XLA's per-step buffers mapped.

Applied by the package itself when `llama_jax` is first imported (`llama_jax/__init__.py`), so a
machine set up only by `pip install` gets it; nothing needs installing or preloading.

Why: XLA:CPU allocates each executable's temporaries (one buffer, 0.7-3.7 GiB for a
configs/bench_34m.py train step) when the step starts and frees it when it ends. glibc serves
blocks above its mmap threshold (at most 32 MiB) with a fresh `mmap` and unmaps them on free, and
XLA's worker threads allocate from per-thread arenas whose heaps cannot hold a block over 64 MiB,
so they fall back to `mmap` whatever the threshold. Every step then page-faults its whole working
set in again: ~700k minor faults (2.7 GiB of first touches, zeroed by the kernel) per bench_34m
step at 8 x 512 tokens, a fifth of the step on a 2-core machine.

What is set (`mallopt`, before any XLA thread exists):
- M_ARENA_MAX = 1: every thread allocates from the main arena, which can grow without bound;
- M_MMAP_MAX = 0: no block is served by `mmap`; large ones come from the main heap;
- M_TRIM_THRESHOLD = -1 (as size_t: never): freed memory at the top of the heap stays mapped
  and is handed out again by the next step, so after the first step a step faults nothing in.

The cost: freed memory is kept for reuse instead of returned to the kernel, so the resident size
stays at the high-water mark of the heap (what the steps need anyway), and allocation-heavy
threads share one arena lock (XLA makes a few large allocations per step). It is skipped where it
cannot apply or does not matter: another allocator preloaded (tcmalloc, jemalloc, mimalloc), a
C library other than glibc, or an accelerator on the machine (GPU/TPU hosts, whose steps do not
live in host memory). `LLAMA_JAX_MALLOC=system` turns it off; `LLAMA_JAX_MALLOC=tuned` forces it.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform

ENV = "LLAMA_JAX_MALLOC"
CHOICES = ("auto", "tuned", "system")

# glibc's <malloc.h> parameter numbers and the values set.
M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))
OTHER_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
ACCELERATOR_NODES = ("/dev/nvidia0", "/dev/accel0", "/dev/vfio/0")

_state = {"applied": False, "reason": "not configured yet"}


def _skip_reason(choice: str, env) -> str | None:
  preload = env.get("LD_PRELOAD", "")
  other = [name for name in OTHER_ALLOCATORS if name in preload]
  if other:
    return f"{other[0]} preloaded"
  if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
    return "not glibc"
  if choice == "auto" and "cpu" != env.get("JAX_PLATFORMS", "").split(",")[0]:
    present = [node for node in ACCELERATOR_NODES if os.path.exists(node)]
    if present:
      return f"accelerator present ({present[0]})"
  return None


def configure(env=None) -> bool:
  """Applies the settings once per process unless `LLAMA_JAX_MALLOC` or the machine says not to;
  returns whether they are in force. Later calls only report."""
  if _state["reason"] != "not configured yet":
    return _state["applied"]
  env = os.environ if env is None else env
  choice = env.get(ENV, "auto") or "auto"
  if choice not in CHOICES:
    _state["reason"] = f"{ENV}={choice!r} is not one of {list(CHOICES)}; left as it was"
    return False
  reason = "turned off by LLAMA_JAX_MALLOC=system" if choice == "system" else _skip_reason(
      choice, env)
  if reason is None:
    try:
      mallopt = ctypes.CDLL(None).mallopt
      mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
      failed = [param for param, value in SETTINGS if mallopt(param, value) != 1]
      reason = f"mallopt refused {failed}" if failed else None
    except (OSError, AttributeError) as e:
      reason = f"no mallopt ({e})"
  _state.update(applied=reason is None, reason=reason or "")
  return _state["applied"]


@contextlib.contextmanager
def for_children(choice: str | None):
  """Processes spawned inside get `LLAMA_JAX_MALLOC=choice` (None: this process's setting).

  For benchmarks whose baseline runs in a spawned child that imports llama_jax (and so
  configures its own heap): the baseline can run on the system allocator while this process
  keeps the tuned one, or the other way round.
  """
  if choice is None:
    yield
    return
  if choice not in CHOICES:
    raise ValueError(f"allocator choice {choice!r} is not one of {list(CHOICES)}")
  before = os.environ.get(ENV)
  os.environ[ENV] = choice
  try:
    yield
  finally:
    if before is None:
      os.environ.pop(ENV, None)
    else:
      os.environ[ENV] = before


def describe() -> str:
  """For benchmark headers: which allocator settings this process runs with."""
  lib = [e for e in os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
         if any(name in os.path.basename(e) for name in OTHER_ALLOCATORS)]
  if lib:
    return f"preloaded {lib[0]}"
  if _state["applied"]:
    return "glibc malloc, tuned by llama_jax (one arena, no mmap, no trimming)"
  return f"glibc malloc, system defaults ({_state['reason']})"
