"""The model spec: everything static about one run's model, built once and handed around.

A `ModelSpec` holds the graph definition (the `nnx.GraphDef` of the Llama, with the run's
activation-sharding rules), the abstract parameter tree (ShapeDtypeStructs: shapes and dtypes,
no memory), each parameter's logical axes, and the trainable mask. It comes from one
`nnx.eval_shape` of the model (`abstract`, the only place that builds the abstract model): the
config validation, the train state's creation and restore, the train and eval steps and the
checkpoint readers take the spec instead of rebuilding it.

Parameters are plain nested dicts of arrays (`to_params`); a parameter's path is its dict keys
joined by "/" (`layers/attention/q`), the name regexes such as `optim.trainable` match.
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


def abstract(cfg: ModelConfig, rules: Rules | None = None) -> Llama:
  """The model with ShapeDtypeStruct leaves: shapes, dtypes and logical axes, no memory."""
  return nnx.eval_shape(lambda: Llama(cfg, rngs=nnx.Rngs(params=0), rules=rules))


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

  @classmethod
  def build(cls, config: ModelConfig, rules: Rules | None = None,
            trainable: str = ".*") -> "ModelSpec":
    """The spec of `config` (cached: a run that validates its config twice, e.g. once before
    `jax.distributed` starts and once after, builds the abstract model once)."""
    return _build(cls, config, rules, trainable)

  @classmethod
  def _from_model(cls, config, rules, trainable) -> "ModelSpec":
    model = abstract(config, rules)
    graphdef, state = nnx.split(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    mask = trainable_mask(params, trainable)
    if not any(jax.tree.leaves(mask)):
      raise ConfigError(f"optim.trainable={trainable!r} matches no parameter; parameter paths "
                        f"are e.g. {paths(params)[:6]}")
    del state
    return cls(config, rules, graphdef, params, sharding.param_logical_axes(model), mask,
               trainable)

  # ------------------------------------------------------------------------------ queries
  @property
  def all_trainable(self) -> bool:
    return all(jax.tree.leaves(self.trainable))

  def num_params(self, trainable_only: bool = False) -> int:
    return count_params(self.abstract_params, self.trainable if trainable_only else None)

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
  def init_params(self, seed: int) -> dict:
    """A random initialisation (pure: run it under `jax.jit` with out_shardings)."""
    return to_params(Llama(self.config, rngs=nnx.Rngs(params=seed), rules=self.rules))

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
def _build(cls, config: ModelConfig, rules, trainable: str) -> ModelSpec:
  return cls._from_model(config, rules, trainable)


def from_params(cfg: ModelConfig, params: dict, rules: Rules | None = None) -> Llama:
  """A model holding `params` (a nested dict of arrays, as `to_params` returns), cast to the
  config's `param_dtype`; shapes are checked against the config first."""
  spec = ModelSpec.build(cfg, rules)
  spec.check(params)
  return spec.merge(jax.tree.map(lambda x: jnp.asarray(x, jnp.dtype(cfg.param_dtype)), params))
