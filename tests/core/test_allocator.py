"""The package's glibc malloc settings: applied on import, off on request, and what they buy
(XLA:CPU temporaries over 64 MiB stop being page-faulted in again on every call)."""
import os
import subprocess
import sys

import pytest

from llama_jax.core import allocator

FAULTS = """
import resource
import llama_jax  # applies the settings (or not, as LLAMA_JAX_MALLOC says)
import jax, jax.numpy as jnp
from llama_jax.core import allocator
# The [4096, 8192] product (128 MiB) is a temporary far above 64 MiB; the work is small.
f = jax.jit(lambda a, b: jnp.tanh(a @ b) @ b.T)
a, b = jnp.ones((4096, 8), jnp.float32), jnp.ones((8, 8192), jnp.float32)
for _ in range(6):  # the heap reaches its high-water mark within a few calls
  f(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
  f(a, b).block_until_ready()
print(allocator.describe())
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) // 3)
"""


def _run(code, **env):
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, **env})
  assert out.returncode == 0, out.stderr[-2000:]
  return out.stdout.strip().splitlines()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings: Linux only")
def test_import_tunes_malloc_and_calls_stop_faulting_their_temporaries_in():
  tuned_desc, tuned = _run(FAULTS, LLAMA_JAX_MALLOC="auto", JAX_PLATFORMS="cpu")
  system_desc, system = _run(FAULTS, LLAMA_JAX_MALLOC="system", JAX_PLATFORMS="cpu")
  assert "tuned by llama_jax" in tuned_desc
  assert "system defaults" in system_desc and "LLAMA_JAX_MALLOC=system" in system_desc
  # System malloc maps and unmaps each call's temporaries: ~100k+ fresh pages per call.
  assert int(system) > 30_000
  assert int(tuned) < 0.05 * int(system)


def test_skips_under_another_allocator_or_a_bad_setting():
  describe = "from llama_jax.core import allocator; print(allocator.describe())"
  assert "LLAMA_JAX_MALLOC='bogus'" in _run(describe, LLAMA_JAX_MALLOC="bogus")[0]
  assert allocator._skip_reason("auto", {"LD_PRELOAD": "/x/libjemalloc.so.2"}) == (
      "jemalloc preloaded")
  assert allocator._skip_reason("tuned", {"LD_PRELOAD": "/x/libtcmalloc_minimal.so.4"}) == (
      "tcmalloc preloaded")
  if sys.platform.startswith("linux"):
    assert allocator._skip_reason("tuned", {}) is None
    assert allocator._skip_reason("auto", {"JAX_PLATFORMS": "cpu"}) is None
