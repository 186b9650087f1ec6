"""Checkpoints (orbax) with resume and preemption handling.

`CheckpointManager` wraps `orbax.checkpoint.CheckpointManager` (v0 API) with two items per step:
`state` (the train state pytree, `StandardSave`/`StandardRestore`, arrays written shard by shard by
every process) and `data` (the data iterator's state as JSON). Decisions:

- Saves are asynchronous: `save` returns once the arrays are copied off the devices, so the next
  step may donate the state buffers; `wait()` blocks until the files are final.
- Orbax writes each step into a temporary directory and renames it when complete, so a save that
  was killed midway never looks like a checkpoint; keep-last-K is orbax's `max_to_keep`.
- `restore` restores straight onto the shardings of the given abstract state (any mesh). If the
  latest step cannot be read it logs a warning and falls back to the previous one. Unreadable
  steps are never deleted: before the next save they are renamed to `<step>.corrupt` (which
  orbax ignores), so the new history does not collide with or get trimmed against them.
- The trainer decides when to save; `save` skips (returns False) a step that is not newer than
  the latest checkpoint unless `force=True`, and never overwrites an existing step.
"""
from __future__ import annotations

import json
import logging
import os
import re
from typing import Any

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from llama_jax.core import logs
from llama_jax.core.errors import CheckpointError

log = logging.getLogger(__name__)

STATE, DATA = "state", "data"
CHECKPOINTS_DIR = "checkpoints"  # inside a workdir


_SHAPE = re.compile(r"Requested shape: (\(.*?\)) is not compatible with the stored shape: "
                    r"(\(.*?\))")


def _reason(error: BaseException) -> str:
  """Why a step could not be restored, in one line: orbax's shape mismatch without its advice
  (strict=False would pad or truncate the weights, never what a resume wants), a corrupt
  array without TensorStore's object dump."""
  text = str(error)
  shape = _SHAPE.search(text)
  if shape:
    return (f"an array of shape {shape.group(2)} in the checkpoint where the current config "
            f"expects {shape.group(1)}")
  if "Encountered error while reading" in text or "DATA_LOSS" in text:
    return "its array files are unreadable (truncated or corrupt)"
  first = text.splitlines()[0] if text else ""
  first = re.sub(r"\s*See full TensorStore details:.*", "", first)
  return f"{type(error).__name__}: {first[:300]}"


def _check_json(data_state) -> dict:
  if data_state is None:
    return {}
  if not isinstance(data_state, dict):
    raise TypeError(f"data_state must be a dict (the data iterator's state), got "
                    f"{type(data_state).__name__}")
  try:
    json.dumps(data_state)
  except (TypeError, ValueError) as e:
    raise TypeError(f"data_state must be JSON-serialisable: {e}") from None
  return data_state


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


class CheckpointManager:
  """Keeps the last `keep` checkpoints of (train state, data iterator state) in `workdir`."""

  def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
               subdir: str = CHECKPOINTS_DIR, read_only: bool = False):
    """`read_only=True` (e.g. reading another run's workdir) never creates, writes or deletes."""
    if not (isinstance(keep, int) and keep >= 1):
      raise ValueError(f"keep_checkpoints={keep!r} must be an integer >= 1")
    self.directory = os.path.abspath(os.path.join(os.fspath(workdir), subdir))
    self.read_only = read_only
    if read_only and not os.path.isdir(self.directory):
      raise FileNotFoundError(f"no checkpoint directory {self.directory}")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        enable_async_checkpointing=async_save, read_only=read_only)
    self._mgr = ocp.CheckpointManager(
        self.directory, options=options, item_names=(STATE, DATA),
        item_handlers={STATE: ocp.StandardCheckpointHandler(),
                       DATA: ocp.JsonCheckpointHandler()})
    self._unreadable: list[int] = []  # steps that failed to restore; renamed before a save

  # ------------------------------------------------------------------------------ queries
  def all_steps(self) -> list[int]:
    """Steps with a complete checkpoint (including one whose async save is still running)."""
    return sorted(self._mgr.all_steps())

  def latest_step(self) -> int | None:
    steps = self.all_steps()
    return steps[-1] if steps else None

  # ------------------------------------------------------------------------------ save
  def save(self, step: int, state: Any, data_state: dict | None = None,
           force: bool = False) -> bool:
    """Starts an asynchronous save of `state` and `data_state` at `step`; True if started.

    Returns False (with a log line) when `step` already exists, or when it is not newer than
    the latest checkpoint and `force` is False.
    """
    if self.read_only:
      raise PermissionError(f"checkpoint manager for {self.directory} is read-only")
    step = int(step)
    data_state = _check_json(data_state)
    self._quarantine_unreadable()
    steps = self.all_steps()
    if step in steps:
      log.info("checkpoint for step %d already exists in %s; not saving it again", step,
               self.directory)
      return False
    if steps and step < steps[-1] and not force:
      log.warning("not saving step %d: %s already has the newer step %d (pass force=True to "
                  "save an earlier step anyway)", step, self.directory, steps[-1])
      return False
    args = ocp.args.Composite(**{STATE: ocp.args.StandardSave(state),
                                 DATA: ocp.args.JsonSave(data_state)})
    return bool(self._mgr.save(step, args=args, force=True))

  def _quarantine_unreadable(self) -> None:
    """Renames steps that failed to restore to `<step>.corrupt[.n]` (kept, ignored by orbax)."""
    if not self._unreadable:
      return
    self._mgr.wait_until_finished()
    if jax.process_index() == 0:
      for step in self._unreadable:
        src = os.path.join(self.directory, str(step))
        if not os.path.isdir(src):
          continue
        dst, n = src + ".corrupt", 0
        while os.path.exists(dst):
          n += 1
          dst = f"{src}.corrupt.{n}"
        os.rename(src, dst)
        log.warning("moved the unreadable checkpoint step %d aside to %s (kept for inspection; "
                    "delete it yourself when no longer needed)", step, dst)
    _sync("llama_jax_checkpoint_quarantine")
    self._unreadable = []
    self._mgr.reload()

  # ------------------------------------------------------------------------------ restore
  def _restore_step(self, step: int, abstract_state):
    args = ocp.args.Composite(**{STATE: ocp.args.StandardRestore(abstract_state),
                                 DATA: ocp.args.JsonRestore()})
    restored = self._mgr.restore(step, args=args)
    data_state = restored[DATA]
    if data_state is None or not isinstance(data_state, dict):
      raise ValueError(f"data state of step {step} is {type(data_state).__name__}, not a dict")
    return restored[STATE], data_state

  def restore(self, abstract_state, step: int | None = None):
    """(state, data_state, step) restored onto `abstract_state`'s shardings, or None if empty.

    `abstract_state` is a pytree like the saved state whose leaves are ShapeDtypeStructs with
    `sharding` set (or arrays). With `step=None` the newest readable step is used: an unreadable
    newer step is reported with a warning and skipped (its files are left alone). An explicit
    `step` must exist and be readable.
    """
    # A failed restore leaves TensorStore reads running after orbax closed its event loop;
    # their harmless "Event loop is closed" reports are dropped (see core/logs.py).
    logs.silence_closed_event_loop_errors()
    self._mgr.wait_until_finished()
    self._mgr.reload()  # another process may have written steps since this manager started
    steps = self.all_steps()
    if step is not None:
      if step not in steps:
        raise ValueError(f"checkpoint step {step} is not in {self.directory}; available "
                         f"steps: {steps}")
      state, data_state = self._restore_step(step, abstract_state)
      return state, data_state, step
    if not steps:
      return None
    failures = []
    for candidate in reversed(steps):
      try:
        state, data_state = self._restore_step(candidate, abstract_state)
      except Exception as e:
        failures.append((candidate, e))
        log.warning("checkpoint step %d in %s could not be restored (%s); trying the previous "
                    "step. Its files are left in place.", candidate, self.directory, _reason(e))
        continue
      self._unreadable = [s for s, _ in failures]
      return state, data_state, candidate
    details = "; ".join(f"step {s}: {_reason(e)}" for s, e in failures)
    raise CheckpointError(
        f"none of the checkpoints in {self.directory} could be restored ({details}). If the "
        "model or optimizer config changed since they were written, restore the original "
        "config or start in a new workdir; nothing was deleted.") from failures[-1][1]

  # ------------------------------------------------------------------------------ lifecycle
  def wait(self) -> None:
    """Blocks until every started save is complete on disk."""
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
