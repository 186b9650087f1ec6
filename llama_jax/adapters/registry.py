"""Registry of PEFT adapters, and what every adapter is.

An adapter is a frozen dataclass whose fields are its options (`config.adapter.<name>.<field>`,
defaults from the fields), registered under its `name`. Constructing it checks the values
(ConfigError naming the field, the value and what is allowed); the instance is hashable, so it
is part of a run's static `ModelSpec`. It acts on a model only through the model's seams
(`model.llama.Linear` beside every projection weight, `KeyValuePrefix` in every attention
layer, `Llama.position_offset`):

- `install(model, rngs)` replaces seams of a built (or abstract) `Llama` with modules holding
  the adapter's freshly initialised parameters, stacked over the layers like the base weights
  (so scanned and unrolled layers, every remat policy and every mesh treat them alike) and
  carrying logical axes (the base weight's for the axes they share, `adapter` for the rank or
  bottleneck, `virtual_tokens` for prefix tokens; neither is in the default rules, so those
  axes are replicated);
- `initialize(params)` finishes an initialisation that depends on the base weights (DoRA's
  magnitudes); `merge(params)` folds the adapter into the base weights where that is exact
  (LoRA), returning base parameters only;
- `check_model(model_cfg)` refuses a model the adapter cannot work with (a target the model
  lacks, an attention kernel that cannot take a prefix).

Every parameter an adapter adds is an `AdapterParam` (an `nnx.Param`), and that type — not a
name pattern — is what makes a parameter trainable and checkpointed in an adapter run (the
spec's masks). `config.adapter.name` selects one ('' = none); adding an adapter is one module
in this package that registers its class.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax.core.errors import ConfigError
from llama_jax.core.registry import Registry


class AdapterParam(nnx.Param):
  """A parameter added by an adapter: trains and is checkpointed in an adapter run."""


# Target projection → (owning module under `Llama.layers`, its weight attribute). The seam of
# weight `w` is the module's `<w>_proj`. Order fixes each seam's dropout stream (`salt`).
TARGETS: dict[str, tuple[str, str]] = {
    "q": ("attention", "q"), "k": ("attention", "k"), "v": ("attention", "v"),
    "o": ("attention", "o"), "gate": ("ffn", "gate"), "up": ("ffn", "up"),
    "down": ("ffn", "down"),
}
RANK_AXIS, TOKEN_AXIS = "adapter", "virtual_tokens"


class Adapter:
  """Base class of the registered adapter dataclasses (fields = options)."""
  name: ClassVar[str] = ""
  description: ClassVar[str] = ""
  mergeable: ClassVar[bool] = False  # `merge` folds it into the base weights exactly
  param_type: ClassVar[type] = AdapterParam  # what the spec trains and checkpoints

  def install(self, model, rngs: nnx.Rngs) -> None:
    raise NotImplementedError

  def initialize(self, params: dict) -> dict:
    """Parameters (base + adapter, nested dict) with base-dependent initial values filled in."""
    return params

  def merge(self, params: dict) -> dict:
    raise ConfigError(f"adapter {self.name!r} cannot be merged into the base weights (only "
                      f"{[a.name for a in ADAPTERS.entries() if a.mergeable]} can); export it "
                      "as an adapter instead")

  def check_model(self, model_cfg) -> None:
    del model_cfg

  def options(self) -> dict[str, Any]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


ADAPTERS: Registry[type[Adapter]] = Registry("adapter", "adapter.name")


def register(cls: type[Adapter]) -> type[Adapter]:
  """Class decorator: registers an Adapter dataclass under its `name`."""
  return ADAPTERS.register(cls)


def names() -> list[str]:
  return ADAPTERS.names()


def get(name: str) -> type[Adapter]:
  return ADAPTERS.get(name)


def defaults(cls: type[Adapter]) -> dict[str, Any]:
  """The option defaults of an adapter class (`config.adapter.<name>`)."""
  return {f.name: f.default for f in dataclasses.fields(cls)}


def build(name: str, options: Mapping[str, Any], model_cfg=None) -> Adapter | None:
  """The adapter `name` ('' = None) with `options` over its defaults, checked against the model
  when `model_cfg` is given."""
  if not name:
    return None
  cls = get(name)
  options = dict(options)
  unknown = sorted(set(options) - set(defaults(cls)))
  if unknown:
    raise ConfigError(f"adapter.{name}.{unknown[0]} does not exist; {name!r} accepts "
                      f"{sorted(defaults(cls))}")
  adapter = cls(**options)
  if model_cfg is not None:
    adapter.check_model(model_cfg)
  return adapter


def from_config(adapter_cfg, model_cfg=None) -> Adapter | None:
  """The adapter `config.adapter` selects (None when `name` is empty)."""
  name = adapter_cfg["name"]
  given = adapter_cfg[name] if name and name in adapter_cfg else {}
  return build(name, dict(given), model_cfg)


# ------------------------------------------------------------------------------ option checks
def positive_int(adapter: str, field: str, value) -> int:
  if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
    raise ConfigError(f"adapter.{adapter}.{field}={value!r}; allowed: an integer >= 1")
  return value


def number(adapter: str, field: str, value, lo: float | None = None, hi: float | None = None,
           hi_open: bool = False) -> float:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
  ok = ok and (lo is None or value >= lo) and (hi is None or (value < hi if hi_open else
                                                              value <= hi))
  if not ok:
    bounds = f"[{lo}, {hi}{')' if hi_open else ']'}" if hi is not None else f">= {lo}"
    raise ConfigError(f"adapter.{adapter}.{field}={value!r}; allowed: a number "
                      f"{bounds if lo is not None else ''}".rstrip())
  return float(value)


def targets(adapter: str, value) -> tuple[str, ...]:
  """A non-empty tuple of distinct names from TARGETS (a comma-separated string also works)."""
  if isinstance(value, str):
    value = tuple(v.strip() for v in value.split(",") if v.strip())
  if not isinstance(value, (list, tuple)) or not value:
    raise ConfigError(f"adapter.{adapter}.targets={value!r}; allowed: a non-empty tuple of "
                      f"{list(TARGETS)}")
  out = []
  for t in value:
    name = t[:-5] if isinstance(t, str) and t.endswith("_proj") else t  # HF names too
    if name not in TARGETS:
      raise ConfigError(f"adapter.{adapter}.targets contains {t!r}, which is not a projection "
                        f"of the model; allowed: {list(TARGETS)}")
    if name in out:
      raise ConfigError(f"adapter.{adapter}.targets names {name!r} twice")
    out.append(name)
  return tuple(sorted(out, key=list(TARGETS).index))


# ------------------------------------------------------------------------------ seams
@dataclasses.dataclass(frozen=True)
class Projection:
  """One target projection as an installer sees it: where its seam is and its weight's form."""
  target: str
  owner: Any  # the Attention / FeedForward module (stacked over layers)
  seam: str  # attribute name of its Linear seam
  n_in: int  # leading input axes of the weight (after the layer axis)
  shape: tuple[int, ...]  # the stacked weight's shape [L, *in, *out]
  axes: tuple  # its logical axes

  @property
  def layers(self) -> tuple[int, ...]:
    return self.shape[:1]

  @property
  def in_shape(self) -> tuple[int, ...]:
    return self.shape[1:1 + self.n_in]

  @property
  def out_shape(self) -> tuple[int, ...]:
    return self.shape[1 + self.n_in:]

  @property
  def in_axes(self) -> tuple:
    return self.axes[1:1 + self.n_in]

  @property
  def out_axes(self) -> tuple:
    return self.axes[1 + self.n_in:]

  @property
  def salt(self) -> int:
    return list(TARGETS).index(self.target)

  def replace_seam(self, module) -> None:
    setattr(self.owner, self.seam, module)


def projection(model, target: str) -> Projection:
  """The seam and weight of `target` in a built (or abstract, under nnx.eval_shape) model."""
  from llama_jax.model import llama as llama_lib
  owner_name, weight_name = TARGETS[target]
  owner = getattr(model.layers, owner_name)
  seam = f"{weight_name}_proj"
  current = getattr(owner, seam)
  if type(current) is not llama_lib.Linear:
    raise ConfigError(f"the {target} projection already carries an adapter "
                      f"({type(current).__name__}); install one adapter per model")
  weight = getattr(owner, weight_name)
  return Projection(target, owner, seam, current.n_in, tuple(weight.shape),
                    tuple(weight.get_metadata()["logical_axes"]))


def seam_path(target: str) -> tuple[str, str, str]:
  """Parameter-dict path of `target`'s seam: ('layers', owner, '<weight>_proj')."""
  owner_name, weight_name = TARGETS[target]
  return ("layers", owner_name, f"{weight_name}_proj")


def weight_path(target: str) -> tuple[str, str, str]:
  owner_name, weight_name = TARGETS[target]
  return ("layers", owner_name, weight_name)


# ------------------------------------------------------------------------------ building blocks
def kaiming_uniform(key, shape, fan_in: int, dtype=jnp.float32):
  """torch's nn.Linear default init, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), +...)."""
  bound = 1.0 / math.sqrt(fan_in)
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def dropout(x, ctx, rate: float, salt: int):
  """Inverted dropout of `x` with this layer's key (ctx.rng) folded with `salt`; the identity
  when evaluating (no key) or at rate 0."""
  rng = None if ctx is None else ctx.rng
  if rate == 0.0 or rng is None:
    return x
  keep = jax.random.bernoulli(jax.random.fold_in(rng, salt), 1.0 - rate, x.shape)
  return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def get_path(tree: dict, path) -> Any:
  for key in path:
    tree = tree[key]
  return tree


def set_path(tree: dict, path, value) -> dict:
  """A copy of the nested dict `tree` (copied along `path` only) with `value` at `path`."""
  if not path:
    return value
  out = dict(tree)
  out[path[0]] = set_path(tree.get(path[0], {}), path[1:], value)
  return out


def drop_path(tree: dict, path) -> dict:
  """A copy of `tree` without the entry at `path` (and without dicts left empty)."""
  out = dict(tree)
  if len(path) == 1:
    out.pop(path[0], None)
    return out
  if path[0] in out:
    sub = drop_path(out[path[0]], path[1:])
    if sub:
      out[path[0]] = sub
    else:
      del out[path[0]]
  return out
