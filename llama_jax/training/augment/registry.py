"""Registry of batch augmentations: transforms of a training batch inside the jitted step.

An augmentation is an `Augmentation` record: its `options` (name → default, which become
`config.augment.<name>.<option>`) and `build(options, model, seq_len)`, which checks the values
(raising ConfigError) and returns the transform `(batch, rng, step) -> batch`. The transform
runs first thing in the train step, on the global batch, under `jit`: it may change positions,
segment ids, loss masks or add per-example arrays the model reads (RoPE values as a
`rope.RopeInputs` under `ROPE_KEY`), and must keep shapes static. It may report its draws as
float32 scalars in a dict under `METRICS_KEY`; they are logged as `augment_<name>` each step.
Its `rng` is `fold_in(state.rng, step)`, a function of the seed and the step only, so an
interrupted and resumed run draws exactly the same augmentations.

`config.augment.name` selects one ('' = none). Adding one is a module in this package that
registers its record.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax

from llama_jax.core.errors import ConfigError
from llama_jax.core.registry import Registry
from llama_jax.model.loss import ROPE_KEY  # noqa: F401  (re-exported for augmentations)

BatchTransform = Callable[[dict, jax.Array, jax.Array], dict]
METRICS_KEY = "augment_metrics"


@dataclasses.dataclass(frozen=True)
class Augmentation:
  name: str
  options: Mapping[str, Any]  # option → default (config.augment.<name>.<option>)
  build: Callable[[Mapping[str, Any], Any, int], BatchTransform]  # (options, ModelConfig, seq_len)
  description: str = ""


AUGMENTATIONS: Registry[Augmentation] = Registry("batch augmentation", "augment.name")
register = AUGMENTATIONS.register


def names() -> list[str]:
  return AUGMENTATIONS.names()


def transform_for(augment_cfg, model_cfg, seq_len: int) -> BatchTransform | None:
  """The transform that `config.augment` selects (None when `name` is empty)."""
  name = augment_cfg["name"]
  if not name:
    return None
  entry = AUGMENTATIONS.get(name)
  given = augment_cfg[name] if name in augment_cfg else {}
  options = dict(entry.options)
  for key, value in dict(given).items():
    if key not in options:
      raise ConfigError(f"augment.{name}.{key} does not exist; {name!r} accepts "
                        f"{sorted(options)}")
    options[key] = value
  return entry.build(options, model_cfg, seq_len)
