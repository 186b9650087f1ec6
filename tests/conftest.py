"""Test setup: 8 simulated CPU devices, float32, deterministic; shared HF model builders."""
import os
from pathlib import Path

# Subprocesses (CLI runs, multi-process tests) import llama_jax from this checkout, whatever
# else is installed or whichever directory they run in.
_ROOT = str(Path(__file__).resolve().parents[1])
os.environ["PYTHONPATH"] = os.pathsep.join(
    [_ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
# LLVM optimisation level 0 cuts the suite's compile time by about a third; the HLO passes
# (fusion, buffer assignment, hence numerics and memory analyses) are unchanged.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
  try:
    import torch
    torch.set_num_threads(2)
    torch.manual_seed(0)
  except ImportError:
    pass
  yield


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module. Every XLA:CPU executable keeps its
  JIT-compiled code in memory mappings of its own; one process running the whole suite compiles
  thousands of programs and, with them all kept, ran into the kernel's per-process mapping limit
  (vm.max_map_count, 65,530 by default): the next compilation crashed with a segmentation fault."""
  yield
  import jax
  jax.clear_caches()
