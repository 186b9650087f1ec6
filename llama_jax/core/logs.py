"""Quiet, honest logs: what a user of the command-line tools sees on stderr, and nothing else.

llama_jax's own loggers (`llama_jax.*`) speak at INFO. The libraries underneath (absl, JAX,
orbax, TFDS, tensorstore, ...) log dozens of INFO lines per checkpoint restore and a few
WARNINGs that are wrong for our use (orbax says "Given directory is read only" whenever we open
another run's checkpoints read-only, which is the point). `configure(verbose=False)` keeps
their WARNINGs and above, minus the known-spurious ones in `SPURIOUS`; `verbose=True` shows
everything at INFO.

Python warnings become one log line each (`warning: DataWarning: ...`); libraries'
deprecation notices show only with verbose.

`silence_closed_event_loop_errors()` handles a different kind of noise: orbax reads a
checkpoint inside a private asyncio loop that it closes as soon as the restore fails (a corrupt
or mismatched step). TensorStore reads started for that restore keep running and, as each one
finishes, try to wake the closed loop; Python reports each of those `RuntimeError: Event loop
is closed` through `sys.unraisablehook` as a bare traceback — dozens of them, after a recovery
that worked. Nothing is lost by dropping exactly these; every other unraisable error still goes
to the previous hook.
"""
from __future__ import annotations

import logging
import re
import sys
import warnings

# Loggers of the libraries llama_jax runs on; their INFO lines are for their developers.
THIRD_PARTY = ("absl", "jax", "jaxlib", "orbax", "tensorstore", "tensorflow_datasets",
               "tensorflow", "grain", "etils", "array_record", "matplotlib", "PIL", "urllib3",
               "filelock", "fsspec", "tensorboardX", "asyncio", "torch", "transformers",
               "huggingface_hub", "h5py")

# Third-party warnings that are wrong or irrelevant for how llama_jax uses the library.
SPURIOUS = tuple(re.compile(p) for p in (
    r"Given directory is read only",  # orbax: we open other runs' checkpoints read-only
    r"CheckpointManagerOptions\.read_only=True",  # orbax: ditto
    r"setting save_interval_steps=0",
    r"Logging before flag parsing goes to stderr",  # absl without app.run
))


class _Format(logging.Formatter):
  """`message` for INFO and below; `warning: message` / `error: message` above."""

  def format(self, record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info and record.levelno >= logging.ERROR:
      text += "\n" + self.formatException(record.exc_info)
    if record.levelno >= logging.WARNING:
      return f"{record.levelname.lower()}: {text}"
    return text


class _DropSpurious(logging.Filter):
  """Third-party records below WARNING (some libraries set their own loggers' levels) and the
  known-spurious warnings; llama_jax's own records all pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.name.startswith("llama_jax"):
      return True
    if record.levelno < logging.WARNING:
      return False
    text = record.getMessage()
    return not any(p.search(text) for p in SPURIOUS)


class _Stderr(logging.StreamHandler):
  """A handler writing to whatever sys.stderr is when a record arrives (tests swap it)."""

  def __init__(self, stream=None):
    self._fixed = stream
    super().__init__(stream or sys.stderr)

  @property
  def stream(self):
    return self._fixed or sys.stderr

  @stream.setter
  def stream(self, value):
    pass


_HANDLER: logging.Handler | None = None


def configure(verbose: bool = False, stream=None) -> None:
  """Routes all logging to `stream` (default stderr) in the tools' format; see the module doc.

  Idempotent: a second call replaces the handler it installed (tests run many tools in one
  process). Other handlers on the root logger stay, except plain console ones.
  """
  global _HANDLER
  root = logging.getLogger()
  if _HANDLER is not None:
    root.removeHandler(_HANDLER)
  # absl calls logging.basicConfig() at its first log line when the root has no handler, which
  # would print every record a second time in its own format; such plain console handlers go.
  for handler in list(root.handlers):
    if type(handler) is logging.StreamHandler:  # exactly basicConfig's kind, no subclass
      root.removeHandler(handler)
  _HANDLER = _Stderr(stream)
  _HANDLER.setFormatter(_Format())
  if not verbose:
    _HANDLER.addFilter(_DropSpurious())
  root.addHandler(_HANDLER)
  root.setLevel(logging.INFO)
  logging.getLogger("llama_jax").setLevel(logging.DEBUG if verbose else logging.INFO)
  for name in THIRD_PARTY:
    logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)
  try:  # absl keeps its own verbosity besides the logger level
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.INFO if verbose else absl_logging.WARNING)
    absl_logging.get_absl_handler().setLevel(logging.INFO if verbose else logging.WARNING)
  except ImportError:
    pass
  _route_warnings(verbose)
  silence_closed_event_loop_errors()


def _route_warnings(verbose: bool) -> None:
  """Python warnings as one log line each ("warning: DataWarning: ..."), not two lines with
  the source that issued them; libraries' deprecation notices (for their users' developers,
  not ours) only with verbose."""
  developer = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)

  def show(message, category, filename, lineno, file=None, line=None):
    if not verbose and issubclass(category, developer) and "llama_jax" not in filename:
      return
    logging.getLogger("llama_jax.warnings").warning("%s: %s", category.__name__, message)

  warnings.showwarning = show


def _is_closed_loop_error(unraisable) -> bool:
  exc = unraisable.exc_value
  if not (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"):
    return False
  tb = unraisable.exc_traceback
  while tb is not None and tb.tb_next is not None:
    tb = tb.tb_next
  return tb is not None and "asyncio" in tb.tb_frame.f_code.co_filename


def silence_closed_event_loop_errors() -> None:
  """Drops the `Event loop is closed` reports of a failed orbax restore (see the module doc).

  Installed once per process (a second call is a no-op); other unraisable errors go to the
  hook that was in place before.
  """
  previous = sys.unraisablehook
  if getattr(previous, "_llama_jax", False):
    return

  def hook(unraisable):
    if not _is_closed_loop_error(unraisable):
      previous(unraisable)

  hook._llama_jax = True
  sys.unraisablehook = hook
