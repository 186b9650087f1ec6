"""The process's memory allocator for CPU runs: find tcmalloc and restart a CLI with it preloaded.

Why it matters: XLA:CPU allocates a train step's temporaries when the step starts and frees them
when it ends. glibc's malloc serves every block over 32 MiB with a fresh `mmap` and unmaps it on
free, so each step page-faults its whole working set in again — on `configs/bench_34m.py` that
is ~2.7 GB of first touches per step (~3.4M minor faults over five steps) and costs 20-25% of
the step time. tcmalloc keeps freed spans mapped and hands them back on the next step. TPU VM
images preload it for the same reason.

    LD_PRELOAD=$(python -m llama_jax.malloc) python -m llama_jax.train --config=configs/tiny.py

prints the library's path (nothing, exit status 1, when none is installed:
`apt install libtcmalloc-minimal4` or `google-perftools` provides it). `llama_jax.bench`
restarts itself with it (`--malloc=auto`) so that both the JAX steps and the HF/torch child
process run on the same allocator.
"""
from __future__ import annotations

import os
import sys

from llama_jax.core.errors import UsageError

# Preferred first: the minimal build has no heap profiler hooks.
LIBRARIES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4", "libtcmalloc_minimal.so",
             "libtcmalloc.so")
SEARCH_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64",
               "/usr/lib", "/usr/local/lib", "/opt/homebrew/lib")
CHOICES = ("auto", "tcmalloc", "system")
_REEXEC_MARK = "LLAMA_JAX_MALLOC_REEXEC"


def find_tcmalloc(search_dirs=SEARCH_DIRS) -> str | None:
  """The path of an installed tcmalloc shared library, or None."""
  for directory in search_dirs:
    for name in LIBRARIES:
      path = os.path.join(directory, name)
      if os.path.isfile(path):
        return path
  return None


def preloaded(env=None) -> str | None:
  """The tcmalloc entry of LD_PRELOAD, if this process was started with one."""
  for entry in (env if env is not None else os.environ).get("LD_PRELOAD", "").replace(
      ":", " ").split():
    if "tcmalloc" in os.path.basename(entry):
      return entry
  return None


def describe() -> str:
  """For benchmark headers: which allocator this process runs on."""
  lib = preloaded()
  return f"tcmalloc ({lib})" if lib else "system malloc (glibc)"


def ensure(choice: str, module: str, argv: list[str]) -> None:
  """Restarts `python -m module argv[1:]` with tcmalloc preloaded, when `choice` asks for it.

  auto: restart when tcmalloc is installed and not yet loaded, otherwise carry on (with a hint
  on stderr); tcmalloc: the same but a missing library is an error; system: do nothing. Returns
  only when the current process is to carry on.
  """
  if choice not in CHOICES:
    raise UsageError(f"--malloc={choice!r} is not one of {list(CHOICES)}")
  if choice == "system" or preloaded() or os.environ.get(_REEXEC_MARK):
    return
  lib = find_tcmalloc()
  if lib is None:
    message = ("tcmalloc not found in " + ", ".join(SEARCH_DIRS) + "; install it with "
               "`apt install libtcmalloc-minimal4` (CPU steps then skip re-faulting their "
               "memory every step)")
    if choice == "tcmalloc":
      raise UsageError(f"--malloc=tcmalloc: {message}; or use --malloc=auto")
    print(f"note: running on the system allocator: {message}", file=sys.stderr, flush=True)
    return
  env = dict(os.environ)
  env["LD_PRELOAD"] = " ".join(filter(None, [lib, env.get("LD_PRELOAD", "")]))
  env[_REEXEC_MARK] = "1"
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, "-m", module, *argv[1:]], env)
