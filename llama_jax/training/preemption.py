"""Preemption: SIGTERM / SIGINT become a flag the training loop polls, so it can save and exit.

With one process the loop reads the flag after every step and stops at once. With several,
every process must stop at the same step (they run one SPMD program), so the flags are agreed
on — and agreeing through a blocking all-gather after every step would make the host wait for
the devices to finish that step, every step, before it prepares the next batch. Instead the
flags ride in the batch: each process puts its own flag in every row it loads
(`batch_flags`, under `STOP_KEY`), the train step reduces them over the global batch inside its
own program (no extra collective launch) and returns the maximum as its `stop` metric, and the
loop acts on the *previous* step's value (`stop_now`): that step has finished, or is finishing,
while the current one is queued behind it, so the host never waits for work it did not have to,
and every process reads the same agreed value at the same step. A stop request is honoured one
step after the step in progress (two at most). Measured in experiments/preemption_latency.py.
"""
from __future__ import annotations

import logging
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)

STOP_KEY = "stop"  # the batch entry holding the processes' stop flags (`batch_flags`)


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
    self._pending = None  # the last step's `stop` metric, read by the next `stop_now`
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

  def batch_flags(self, rows: int) -> np.ndarray:
    """This process's stop flag, one int32 per local batch row, to go into the batch under
    `STOP_KEY`; the train step returns their maximum over the global batch (its `stop`
    metric)."""
    return np.full((rows,), self._flag.is_set(), np.int32)

  def stop_now(self, stop_metric) -> bool:
    """The training loop's per-step decision, after dispatching a step whose batch carried
    `batch_flags`; `stop_metric` is that step's `stop` metric. One process: the local flag.
    Several: the previous step's agreed value — every process must call this once per step,
    at the same steps (see the module docstring)."""
    if jax.process_count() == 1:
      return self._flag.is_set()
    previous, self._pending = self._pending, stop_metric
    if previous is None:
      return False
    # Replicated: this process's copy is the agreed value, ready once the previous step is.
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

