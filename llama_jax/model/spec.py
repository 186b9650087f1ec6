"""The model spec: everything static about one run's model, built once and handed around.

A `ModelSpec` holds the graph definition (the `nnx.GraphDef` of the Llama, with the run's
activation-sharding rules), the abstract parameter tree (ShapeDtypeStructs: shapes and dtypes,
no memory), each parameter's logical axes, and the trainable mask. It comes from one
`nnx.eval_shape` of the model (`abstract`, the only place that builds the abstract model): the
config validation, the train state's creation and restore, the train and eval steps and the
checkpoint readers take the spec instead of rebuilding it.

Parameters are plain nested dicts of arrays (`to_params`); a parameter's path is its dict keys
joined by "/" (`layers/attention/q`), the name regexes such as `optim.trainable` match.

A spec may carry an adapter (`llama_jax.adapters`; this layer only calls its `install`,
`initialize` and reads its `param_type`): its graph and parameters are then those of the model
with the adapter installed, and the parameters of the adapter's type are the only trainable ones
(intersected with `optim.trainable`) and the only ones a run's checkpoint holds (`saved`); the
rest — the base — comes from `init_from` (or the seed) at every start. `select` and `combine`
split a parameter tree by such a mask and join the parts again.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax.core.errors import ConfigError
from llama_jax.model.config import ModelConfig
from llama_jax.model.llama import Llama
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import Rules

ADAPTER_STREAM = 0xADA  # adapters draw their initial values from fold_in(seed key, this)


def build(cfg: ModelConfig, rules: Rules | None = None, adapter=None, seed: int = 0) -> Llama:
  """The model initialised from `seed`, with `adapter` installed (from its own random stream,
  so the base weights of a seed do not depend on the adapter)."""
  model = Llama(cfg, rngs=nnx.Rngs(params=seed), rules=rules)
  if adapter is not None:
    key = jax.random.fold_in(jax.random.PRNGKey(seed), ADAPTER_STREAM)
    adapter.install(model, nnx.Rngs(params=key))
  return model


def abstract(cfg: ModelConfig, rules: Rules | None = None, adapter=None) -> Llama:
  """The model with ShapeDtypeStruct leaves: shapes, dtypes and logical axes, no memory."""
  return nnx.eval_shape(lambda: build(cfg, rules, adapter))


def to_params(model: Llama) -> dict:
  """The parameters as a nested dict of arrays (paths as in `interop/hf_layout.py`)."""
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def param_path(path) -> str:
  """"/"-joined dict keys of a pytree key path (attribute/index entries are skipped)."""
  return "/".join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def paths(params) -> list[str]:
  """Every parameter path in `params`, in tree order."""
  return [param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def compile_regex(pattern: str, field: str) -> re.Pattern:
  try:
    return re.compile(pattern)
  except re.error as e:
    raise ConfigError(f"{field} contains an invalid regex {pattern!r}: {e}") from None


def trainable_mask(params, regex: str):
  """Pytree of bool like `params`: True where the path matches `regex` (re.search)."""
  pattern = compile_regex(regex, "optim.trainable")
  return jax.tree_util.tree_map_with_path(lambda p, _: bool(pattern.search(param_path(p))),
                                          params)


def select(params, mask) -> dict:
  """The leaves of the nested dict `params` where `mask` is True (dicts left empty dropped)."""
  out = {}
  for key, value in params.items():
    if isinstance(value, dict):
      sub = select(value, mask[key])
      if sub:
        out[key] = sub
    elif mask[key]:
      out[key] = value
  return out


def combine(*trees) -> dict:
  """One nested dict holding the leaves of all `trees` (which must not share a path)."""
  out: dict = {}
  for tree in trees:
    for key, value in tree.items():
      if isinstance(value, dict) and isinstance(out.get(key), dict):
        out[key] = combine(out[key], value)
      elif key in out:
        raise ValueError(f"combine: parameter {key!r} is in more than one tree")
      else:
        out[key] = value
  return out


def count_params(params, mask=None) -> int:
  """Number of parameter elements (only where `mask` is True, if given)."""
  sizes = [math.prod(getattr(x, "shape", ())) for x in jax.tree.leaves(params)]
  if mask is None:
    return sum(sizes)
  return sum(s for s, m in zip(sizes, jax.tree.leaves(mask)) if m)


def _shapes(tree) -> dict[str, tuple]:
  return {param_path(k): tuple(jnp.shape(v))
          for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


@dataclasses.dataclass(frozen=True, eq=False)
class ModelSpec:
  """One run's static model: graph, abstract parameters, logical axes, trainable mask."""
  config: ModelConfig
  rules: Rules | None  # logical → mesh rules for activation constraints; None off-mesh
  graphdef: Any
  abstract_params: dict  # nested dict of jax.ShapeDtypeStruct
  logical_axes: dict[str, tuple]  # parameter path → logical axis names
  trainable: dict  # nested dict of bool like the parameters
  trainable_regex: str = ".*"
  adapter: Any = None  # the installed adapter (llama_jax.adapters), or None
  saved: dict | None = None  # bool tree: what a run's checkpoint holds (None: everything)

  @classmethod
  def build(cls, config: ModelConfig, rules: Rules | None = None, trainable: str = ".*",
            adapter=None) -> ModelSpec:
    """The spec of `config` (with `adapter` installed). Cached: a run that validates its
    config twice, e.g. once before `jax.distributed` starts and once after, builds the
    abstract model once (adapters are frozen dataclasses, so they key the cache too)."""
    return _build(cls, config, rules, trainable, adapter)

  @classmethod
  def _from_model(cls, config, rules, trainable, adapter) -> ModelSpec:
    model = abstract(config, rules, adapter)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mask = trainable_mask(params, trainable)
    saved = None
    if adapter is not None:
      own = set(paths(nnx.to_pure_dict(nnx.state(model, adapter.param_type))))
      saved = jax.tree_util.tree_map_with_path(lambda p, _: param_path(p) in own, params)
      mask = jax.tree.map(lambda a, b: a and b, mask, saved)
    if not any(jax.tree.leaves(mask)):
      where = "adapter parameter" if adapter is not None else "parameter"
      example = sorted(own) if adapter is not None else paths(params)
      raise ConfigError(f"optim.trainable={trainable!r} matches no {where}; {where} paths "
                        f"are e.g. {example[:6]}")
    del state
    return cls(config, rules, graphdef, params, sharding.param_logical_axes(model), mask,
               trainable, adapter, saved)

  # ------------------------------------------------------------------------------ queries
  @property
  def all_trainable(self) -> bool:
    return all(jax.tree.leaves(self.trainable))

  def num_params(self, trainable_only: bool = False) -> int:
    return count_params(self.abstract_params, self.trainable if trainable_only else None)

  def split_trainable(self, params) -> tuple[dict, dict]:
    """(trainable, frozen) parts of a parameter tree (the frozen part is {} when all train)."""
    if self.all_trainable:
      return params, {}
    frozen = jax.tree.map(lambda t: not t, self.trainable)
    return select(params, self.trainable), select(params, frozen)

  def saved_params(self, params) -> dict:
    """The part of `params` a run's checkpoint holds: the adapter's, or everything."""
    return params if self.saved is None else select(params, self.saved)

  def base_params(self, params) -> dict:
    """The part of `params` that is not the adapter's (everything without an adapter)."""
    if self.saved is None:
      return params
    return select(params, jax.tree.map(lambda s: not s, self.saved))

  def param_shardings(self, mesh, rules: Rules | None = None):
    """A NamedSharding for every parameter, from its logical axes."""
    return sharding.tree_shardings(self.abstract_params, mesh, rules or self.rules,
                                   param_axes=self.logical_axes)

  def check(self, params, where: str = "parameter tree") -> None:
    """Raises ValueError unless `params` has exactly this spec's paths and shapes."""
    want, got = _shapes(self.abstract_params), _shapes(params)
    if want.keys() != got.keys():
      raise ValueError(f"{where} does not match the model config: missing "
                       f"{sorted(want.keys() - got.keys())}, unexpected "
                       f"{sorted(got.keys() - want.keys())}")
    for name, shape in want.items():
      if got[name] != shape:
        raise ValueError(f"parameter {name} has shape {got[name]}; the config implies {shape}")

  # ------------------------------------------------------------------------------ models
  def init_params(self, seed: int, base: dict | None = None) -> dict:
    """A random initialisation (pure: run it under `jax.jit` with out_shardings).

    `base` (adapter specs): the base weights to install the adapter on, instead of random ones;
    base-dependent adapter values (DoRA's magnitudes) are computed from them.
    """
    params = to_params(build(self.config, self.rules, self.adapter, seed))
    if self.adapter is None:
      return params if base is None else base
    if base is not None:
      params = combine(self.saved_params(params), base)
    return self.adapter.initialize(params)

  def merge(self, params, rules: Rules | None | str = "spec") -> Llama:
    """The model holding `params` (inside a jitted function: the graph is static).

    `rules` replaces the spec's activation-sharding rules for this model (None: no activation
    constraints, e.g. to decode one prompt on a mesh whose batch axes it cannot fill).
    """
    model = nnx.merge(self.graphdef, params)
    if rules != "spec":
      model.rules = rules
    return model


@functools.lru_cache(maxsize=16)
def _build(cls, config: ModelConfig, rules, trainable: str, adapter) -> ModelSpec:
  return cls._from_model(config, rules, trainable, adapter)


def from_params(cfg: ModelConfig, params: dict, rules: Rules | None = None,
                adapter=None) -> Llama:
  """A model holding `params` (a nested dict of arrays, as `to_params` returns), cast to the
  config's `param_dtype` (adapter parameters keep theirs); shapes are checked against the
  config (and the adapter) first."""
  spec = ModelSpec.build(cfg, rules, adapter=adapter)
  spec.check(params)
  dtype = jnp.dtype(cfg.param_dtype)
  own = spec.saved if spec.saved is not None else jax.tree.map(lambda _: False, params)
  return spec.merge(jax.tree.map(
      lambda x, a, mine: jnp.asarray(x, a.dtype if mine else dtype), params,
      spec.abstract_params, own))
