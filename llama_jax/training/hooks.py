"""Periodic actions of the training loop: a list of (every, action) instead of inline branches.

After every step the loop runs the hooks that are due (`step % every == 0`), in list order; after
the last step it runs, once more, those that want a final call and were not just run. A run
stopped by a signal makes the final call only to hooks marked `on_stop` (logging the steps not
yet logged, the checkpoint), not to those that would delay the exit (evaluations, the sample).
Logging, evaluations, checkpoints and the final sample are hooks; a caller can add its own
(`loop.run(..., hooks=[...])`), e.g. an export every N steps.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

Action = Callable[[int, Any], None]  # (step, train state)


@dataclasses.dataclass
class Periodic:
  name: str
  every: int  # run when step % every == 0; 0 = never periodically
  action: Action
  at_end: bool = True  # also after the last step (unless it has just run)
  on_stop: bool = False  # ... even when a signal stopped the run early

  def due(self, step: int) -> bool:
    return self.every > 0 and step % self.every == 0


def run_due(hooks: Sequence[Periodic], step: int, state) -> None:
  for hook in hooks:
    if hook.due(step):
      hook.action(step, state)


def run_final(hooks: Sequence[Periodic], step: int, state, stopped: bool,
              ran_this_step: bool) -> None:
  """The final calls: hooks with `at_end` that did not just run (`on_stop` ones if stopped)."""
  for hook in hooks:
    if not hook.at_end or (stopped and not hook.on_stop):
      continue
    if ran_this_step and hook.due(step):
      continue
    hook.action(step, state)
