"""The error types of llama_jax, one module for all of them.

Every error a user can fix derives from `LlamaJaxError`; its message says what is wrong, which
value, and what is allowed or what to run. The command-line tools print such errors as one line
(no traceback) and exit non-zero; anything else is a bug and keeps its traceback. The concrete
types also derive from `ValueError`, so callers that catch ValueError keep working.
"""
from __future__ import annotations


class LlamaJaxError(Exception):
  """A problem the user can fix; the message names the value and what to change."""


class ConfigError(LlamaJaxError, ValueError):
  """A configuration value that cannot work (a field, its value, what is allowed)."""


class DataError(LlamaJaxError, ValueError):
  """A problem with the data or the tokenizer (a file, a line, what is wrong with it)."""


class CheckpointError(LlamaJaxError, ValueError):
  """A checkpoint that cannot be read or written (the directory, tensor or field)."""


class UsageError(LlamaJaxError, ValueError):
  """A command-line mistake: a missing or malformed flag, an unexpected argument."""
