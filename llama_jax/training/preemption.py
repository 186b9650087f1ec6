"""Preemption: SIGTERM / SIGINT become a flag the training loop polls, so it can save and exit.

With one process the loop reads the flag after every step and stops at once. With several,
every process must stop at the same step (they run one SPMD program), so the flags are agreed
on — and agreeing through a blocking all-gather after every step would stall the host until
the devices finished that step, every step. `PreemptionGuard.poll` instead dispatches the
agreement as a tiny jitted max over one flag per device, asynchronously, and reads the result
of the *previous* step's agreement: by then the devices are running the next step, so the host
waits only for work that was finishing anyway, the device queue never runs dry, and every
process reads the same agreed value at the same step. A stop request is thus honoured one step
after the step in progress (two at most, if it lands while a poll is reading), measured in
experiments/preemption/measure.py.
"""
from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class PreemptionGuard:
  """Context manager: SIGTERM / SIGINT set `should_stop` instead of killing the process.

  The training loop polls `guard.should_stop` and saves and exits when it is set. A second
  SIGINT (Ctrl-C twice) restores the default handler and interrupts immediately. The previous
  handlers are restored on exit. With several processes, `should_stop` is agreed across all of
  them (an all-gather of the local flags), so every process must read it at the same steps.
  `sync_every=n` does that all-gather on every n-th read only (the others return the last
  agreed value), for loops whose steps are short. Outside the main thread no handler can be
  installed; the guard then only reports `request_stop()` calls.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), sync_every: int = 1):
    if sync_every < 1:
      raise ValueError(f"sync_every={sync_every!r} must be >= 1")
    self._signals = tuple(signals)
    self._previous = {}
    self._flag = threading.Event()
    self._sync_every, self._reads, self._agreed = sync_every, 0, False
    self._agreement = None  # (jitted max, input sharding) of `poll`, built on first use
    self._pending = None  # the last dispatched agreement, read by the next `poll`
    self.signal_received: int | None = None

  def _handle(self, signum, frame):
    if self._flag.is_set() and signum == signal.SIGINT:
      signal.signal(signal.SIGINT, signal.default_int_handler)
      raise KeyboardInterrupt
    self.signal_received = signum
    self._flag.set()
    log.warning("received %s: stopping after the current step (saving a checkpoint first)%s",
                signal.Signals(signum).name,
                "; press Ctrl-C again to abort immediately" if signum == signal.SIGINT else "")

  def request_stop(self) -> None:
    self._flag.set()

  @property
  def local_stop(self) -> bool:
    return self._flag.is_set()

  @property
  def should_stop(self) -> bool:
    local = self._flag.is_set()
    if jax.process_count() == 1:
      return local
    self._reads += 1
    if not self._agreed and self._reads % self._sync_every == 0:
      flags = multihost_utils.process_allgather(np.asarray(local, np.int32))
      self._agreed = bool(np.any(flags))
    return self._agreed

  def poll(self, mesh=None) -> bool:
    """The per-step check of a training loop: True when every process should stop now.

    One process: the local flag. Several: dispatches this step's agreement (asynchronously)
    and returns the previous step's — every process must call `poll` once per step, at the same
    steps; see the module docstring. `mesh`: the loop's device mesh (default: all devices).
    """
    if jax.process_count() == 1:
      return self._flag.is_set()
    if self._agreement is None:
      self._agreement = _agreement(mesh)
    agree, sharding = self._agreement
    flag = np.full((1,), self._flag.is_set(), np.int32)
    shards = [jax.device_put(flag, d) for d in sharding.addressable_devices]
    local = jax.make_array_from_single_device_arrays(
        (len(sharding.device_set),), sharding, shards)
    previous, self._pending = self._pending, agree(local)
    if previous is None:
      return False
    # Replicated: this process's copy is the agreed value. It is ready once the devices have
    # finished the previous step, while the current one is already queued behind it.
    return bool(np.asarray(previous.addressable_data(0)))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self._signals:
        self._previous[s] = signal.signal(s, self._handle)
    else:
      log.warning("PreemptionGuard outside the main thread: signal handlers not installed")
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous = {}
    return False


def _agreement(mesh=None):
  """(jitted max over one int32 flag per device → replicated scalar, the flags' sharding), on
  the loop's own mesh (all its axes flattened), so it runs inside the loop's mesh context."""
  import jax.numpy as jnp
  from jax.sharding import Mesh, NamedSharding, PartitionSpec
  if mesh is None:
    mesh = Mesh(np.array(jax.devices()), ("devices",))
  flags = NamedSharding(mesh, PartitionSpec(tuple(mesh.axis_names)))
  agree = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, PartitionSpec()))
  return agree, flags
