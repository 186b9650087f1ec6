"""Registry of evaluations, and what every evaluation is.

An evaluation is a class with a `name`, its `options` (each an `Option`: default, kind, help)
and two phases: `__init__(options, context)` prepares on the host (checks the options, reads
and tokenizes its data) and `run(model) -> Result` scores a model, as often as asked. The same
class serves

- the command line: `python -m llama_jax.evaluate --task=<name> --<option>=...` (its options
  become flags, its record and plot are written to `--out`), and
- training: `config.evals.<key> = dict(type=<name>, every=N, <option>=...)` runs it when
  step % N == 0 and at the end; its metrics are logged as `<key>_<metric>`.

Adding an evaluation is one module in this package that registers its class; the package
imports every module (`core.registry`'s idiom).
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from llama_jax.core.errors import ConfigError
from llama_jax.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class Option:
  """One option of an evaluation. `kind` is the value's type (the element type for tuples)."""
  default: Any
  help: str
  kind: type | None = None

  @property
  def type(self) -> type:
    if self.kind is not None and not isinstance(self.default, tuple):
      return self.kind
    return type(self.default)

  @property
  def element(self) -> type | None:
    return self.kind if isinstance(self.default, tuple) else None


@dataclasses.dataclass
class Context:
  """What an evaluation may use besides its options; unset fields are unavailable."""
  tokenizer: Any = None  # a data.tokenizer.Tokenizer
  data: Any = None  # the run's data config (held-out batches come from it)
  seq_len: int = 0  # the run's training length
  batch_size: int = 0  # rows per evaluation batch (the run's micro-batch)
  seed: int = 0
  place: Callable[[dict], dict] | None = None  # per-process NumPy batch → global jax arrays
  process_index: int = 0
  process_count: int = 1
  log: Callable[[str], None] = lambda text: None


@dataclasses.dataclass
class Result:
  metrics: dict[str, float]  # scalars: metrics.jsonl / TensorBoard / console
  record: dict  # JSON-ready details (what the command line writes)


class Evaluation:
  """Base class: subclasses set `name`, `options`, and implement `__init__` and `run`."""
  name: ClassVar[str] = ""
  description: ClassVar[str] = ""
  options: ClassVar[dict[str, Option]] = {}
  needs: ClassVar[tuple[str, ...]] = ("tokenizer",)  # Context fields it requires
  # True: `run` takes the model with the run's activation sharding and feeds it global batches
  # (`Context.place`); False: it gets the model without activation constraints.
  sharded: ClassVar[bool] = False

  def __init__(self, options: Mapping[str, Any], context: Context):
    self.config = resolve_options(type(self), options)
    for need in self.needs:
      if getattr(context, need) is None:
        raise ConfigError(f"evaluation {self.name!r} needs a {need}, which was not given")
    self.context = context

  @classmethod
  def check(cls, config: dict[str, Any]) -> None:
    """Raises ConfigError for option values that cannot work (cheap: no data is read)."""

  def run(self, model) -> Result:
    raise NotImplementedError

  @classmethod
  def figures(cls, records: list[dict]) -> dict:
    """{file name: matplotlib Figure} for this evaluation's records (none by default)."""
    del records
    return {}

  @classmethod
  def tables(cls, records: list[dict]) -> dict[str, str]:
    """{file name: text} tables of this evaluation's records, e.g. markdown (none by default)."""
    del records
    return {}

  def close(self) -> None:
    pass


EVALUATIONS: Registry[type[Evaluation]] = Registry("evaluation", "evals.<name>.type")


def register(cls: type[Evaluation]) -> type[Evaluation]:
  """Class decorator: registers an Evaluation subclass under its `name`."""
  return EVALUATIONS.register(cls)


def names() -> list[str]:
  return EVALUATIONS.names()


def get(name: str) -> type[Evaluation]:
  return EVALUATIONS.get(name)


def _coerce(value, option: Option, where: str):
  want = option.type
  if want is tuple:
    given = value
    if isinstance(value, str):
      value = [v for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)):
      raise ConfigError(f"{where}={given!r}; allowed: a list of {option.element.__name__}")
    try:
      return tuple(option.element(v) if option.element else v for v in value)
    except (TypeError, ValueError):
      raise ConfigError(f"{where}={given!r}; allowed: a comma-separated list of "
                        f"{option.element.__name__}") from None
  if want is bool:
    if not isinstance(value, bool):
      raise ConfigError(f"{where}={value!r}; allowed: true or false")
    return value
  if want is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  if want is int and isinstance(value, bool) or not isinstance(value, want):
    raise ConfigError(f"{where}={value!r}; allowed: a {want.__name__}")
  return value


def resolve_options(cls: type[Evaluation], given: Mapping[str, Any],
                    field: str = "{name}") -> dict[str, Any]:
  """The evaluation's options: its defaults overridden by `given`, checked by name and type.

  `field` spells an option's name in messages, e.g. "evals.ppl.{name}" or "--{name}".
  """
  unknown = sorted(set(given) - set(cls.options))
  if unknown:
    raise ConfigError(f"unknown option(s) {[field.format(name=n) for n in unknown]}; "
                      f"evaluation {cls.name!r} accepts {sorted(cls.options)}")
  out = {}
  for name, option in cls.options.items():
    value = given.get(name, option.default)
    out[name] = _coerce(value, option, field.format(name=name))
  cls.check(out)
  return out


def build(type_name: str, options: Mapping[str, Any], context: Context) -> Evaluation:
  return get(type_name)(options, context)


def warn_past_context(model, lengths: Sequence[int], what: str) -> str | None:
  """Logs (and returns) a warning when any of `lengths` goes past what the model's RoPE
  configuration covers (`rope.config.covered_length`): numbers there measure extrapolation."""
  from llama_jax.rope.config import past_context_warning
  message = past_context_warning(model.cfg.rope, lengths, what)
  if message:
    logging.getLogger("llama_jax.evals").warning(message)
  return message
