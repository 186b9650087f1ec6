"""Multi-process start-up: `jax.distributed.initialize()` when this is one of several processes.

With `--coordinator_address --num_processes --process_id` when given, otherwise with JAX's own
detection on TPU VMs and in multi-task SLURM / Open MPI jobs. It must run before any JAX
computation. See configs/launch/README.md.
"""
from __future__ import annotations

import importlib.util
import os

from llama_jax.core.errors import UsageError


def _in_cluster() -> bool:
  env = os.environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return importlib.util.find_spec("libtpu") is not None  # a TPU VM (one host or a pod)


def initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           local_device_ids=None) -> bool:
  """Starts jax.distributed when this is (possibly) one of several processes; True if started."""
  import jax
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise UsageError("--coordinator_address, --num_processes and --process_id go "
                           "together: give all three or none")
    if not 0 <= process_id < num_processes:
      raise UsageError(f"--process_id={process_id} must be in [0, --num_processes="
                           f"{num_processes})")
  if mode == "off" or (mode == "auto" and all(v is None for v in explicit) and
                       not _in_cluster()):
    return False
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    # CPU devices need a collectives backend to talk across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_device_ids is not None:
    local_device_ids = [int(i) for i in local_device_ids]
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)
  return True
