"""A one-line progress bar with rate and ETA, for work counted in known steps.

Used by the RoPE factor searches (evaluations) and long evaluations (perplexity windows,
passkey trials):

    with progress.Bar(total=1260, desc="dcis", unit="eval") as bar:
      for ...:
        bar.update(1, best=f"{best:.3f}")

It draws only on an interactive terminal (the stream's `isatty()`): logs, pipes, CI and tests
get nothing, so a redirected run's output holds only its own messages. Redraws are throttled
(`min_interval`) and the line is rewritten in place with a carriage return. `initial` counts
work done before this process started (a resumed search): it shows in the count but not in the
rate, so the ETA is the remaining work at this process's own speed.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Self, TextIO


def format_seconds(seconds: float) -> str:
  """'42s', '3m07s', '2h05m' (the unit the eye needs; '?' when unknown)."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = round(seconds)
  if seconds < 60:
    return f"{seconds}s"
  if seconds < 3600:
    return f"{seconds // 60}m{seconds % 60:02d}s"
  return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Bar:
  """Progress over `total` steps; `update` as work completes, `close` (or `with`) at the end."""

  def __init__(self, total: int, desc: str = "", unit: str = "it", *, initial: int = 0,
               stream: TextIO | None = None, enabled: bool | None = None, width: int = 24,
               min_interval: float = 0.2, clock: Callable[[], float] = time.monotonic):
    self.total, self.desc, self.unit, self.width = int(total), desc, unit, width
    self.done = self.initial = int(initial)
    self.stream = sys.stderr if stream is None else stream
    if enabled is None:
      isatty = getattr(self.stream, "isatty", None)
      enabled = bool(isatty and isatty())
    self.enabled = enabled
    self.min_interval, self.clock = min_interval, clock
    self.start = clock()
    self._last_draw = -float("inf")
    self._postfix = ""
    self._width_drawn = 0
    self._draw(force=True)

  # ------------------------------------------------------------------------------ numbers
  @property
  def elapsed(self) -> float:
    return self.clock() - self.start

  @property
  def rate(self) -> float:
    """Steps per second done by this process (work counted by `initial` excluded)."""
    new = self.done - self.initial
    return new / self.elapsed if new > 0 and self.elapsed > 0 else 0.0

  @property
  def eta(self) -> float:
    """Seconds left at the current rate (nan until a step has been timed)."""
    rate = self.rate
    return max(0, self.total - self.done) / rate if rate > 0 else float("nan")

  def line(self) -> str:
    frac = min(1.0, self.done / self.total) if self.total > 0 else 1.0
    filled = round(frac * self.width)
    bar = "#" * filled + "-" * (self.width - filled)
    rate = f"{self.rate:.2f} {self.unit}/s" if self.rate >= 0.1 or not self.rate else (
        f"{1 / self.rate:.1f} s/{self.unit}")
    text = (f"{self.desc + ': ' if self.desc else ''}[{bar}] {self.done}/{self.total} "
            f"{self.unit} {100 * frac:3.0f}% | {format_seconds(self.elapsed)} elapsed, "
            f"ETA {format_seconds(self.eta)}, {rate}")
    return f"{text} | {self._postfix}" if self._postfix else text

  # ------------------------------------------------------------------------------ updates
  def update(self, n: int = 1, **postfix) -> None:
    self.done += n
    if postfix:
      self._postfix = " ".join(f"{k}={v}" for k, v in postfix.items())
    self._draw(force=self.done >= self.total)

  def close(self) -> None:
    if self.enabled:
      self._draw(force=True)
      self.stream.write("\n")
      self.stream.flush()
    self.enabled = False

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def _draw(self, force: bool = False) -> None:
    if not self.enabled:
      return
    now = self.clock()
    if not force and now - self._last_draw < self.min_interval:
      return
    self._last_draw = now
    text = self.line()
    pad = " " * max(0, self._width_drawn - len(text))  # erase the end of a longer old line
    self._width_drawn = len(text)
    self.stream.write("\r" + text + pad)
    self.stream.flush()
