"""AdamW with linear warmup and cosine/linear decay, weight-decay and trainable masks (optax).

LLaMA (Touvron et al. 2023, §2.2) trains with AdamW (β1 0.9, β2 0.95, weight decay 0.1),
gradient clipping at 1.0 and a cosine schedule ending at 10% of the peak after 2000 warmup
steps; `configs/base.py` holds these as `optim.*`. Conventions:

- Weight decay is decoupled and scaled by the learning rate (`p -= lr * (adam + wd * p)`, as
  optax.adamw and PyTorch AdamW do). Parameters whose path matches a regex in `decay_exclude`
  (by default norms and the embedding) are not decayed.
- Parameter paths are the "/"-joined dict keys ("layers/attention/q"); regexes use re.search.
- Parameters whose path does not match `trainable` are frozen: `optax.multi_transform` routes
  them to `set_to_zero`, so they get zero updates and no Adam moments are allocated for them;
  gradient clipping sees only the trainable gradients.
- Masks and labels are computed from whatever tree optax is given (callables), so the same
  optimizer works on a plain dict of parameters, an `nnx.State` of `nnx.Param`s, or the
  ShapeDtypeStructs of `jax.eval_shape`.

Gradient accumulation is done by the train step (a scan over micro-batches, one update).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from llama_jax.model.spec import param_path, paths, trainable_mask

SCHEDULES = ("cosine", "linear", "constant")
_TRAIN, _FROZEN = "trainable", "frozen"


def _field(cfg, name):
  try:
    return cfg[name]
  except (KeyError, TypeError):
    pass
  try:
    return getattr(cfg, name)
  except AttributeError:
    raise ValueError(f"optim.{name} is missing from the optimizer config") from None


def _compile(patterns: str | Sequence[str], field: str) -> list[re.Pattern]:
  if isinstance(patterns, str):
    patterns = (patterns,)
  compiled = []
  for p in patterns:
    try:
      compiled.append(re.compile(p))
    except re.error as e:
      raise ValueError(f"{field} contains an invalid regex {p!r}: {e}") from None
  return compiled


def decay_mask(params, exclude_patterns: Sequence[str]):
  """Pytree of bool like `params`: True where weight decay applies (no exclude regex matches)."""
  regexes = _compile(tuple(exclude_patterns), "optim.decay_exclude")
  return jax.tree_util.tree_map_with_path(
      lambda p, _: not any(r.search(param_path(p)) for r in regexes), params)


def _validate(cfg, total_steps: int) -> dict[str, Any]:
  c = {k: _field(cfg, k) for k in ("peak_lr", "warmup_steps", "schedule", "final_lr_fraction",
                                   "b1", "b2", "eps", "weight_decay", "decay_exclude",
                                   "clip_norm", "trainable")}
  if not (isinstance(total_steps, int) and total_steps > 0):
    raise ValueError(f"steps={total_steps!r} must be a positive integer")
  if c["schedule"] not in SCHEDULES:
    raise ValueError(f"optim.schedule={c['schedule']!r}; allowed: {list(SCHEDULES)}")
  if not c["peak_lr"] > 0:
    raise ValueError(f"optim.peak_lr={c['peak_lr']!r} must be > 0")
  w = c["warmup_steps"]
  if not (isinstance(w, int) and 0 <= w):
    raise ValueError(f"optim.warmup_steps={w!r} must be an integer >= 0")
  if c["schedule"] != "constant" and w >= total_steps:
    raise ValueError(f"optim.warmup_steps={w} must be smaller than steps={total_steps} for a "
                     f"{c['schedule']} decay (or use optim.schedule='constant')")
  if not 0 <= c["final_lr_fraction"] <= 1:
    raise ValueError(f"optim.final_lr_fraction={c['final_lr_fraction']!r}; allowed: [0, 1]")
  for name in ("b1", "b2"):
    if not 0 <= c[name] < 1:
      raise ValueError(f"optim.{name}={c[name]!r}; allowed: [0, 1)")
  if not c["eps"] > 0:
    raise ValueError(f"optim.eps={c['eps']!r} must be > 0")
  for name in ("weight_decay", "clip_norm"):
    if not c[name] >= 0:
      raise ValueError(f"optim.{name}={c[name]!r} must be >= 0 (0 disables it)")
  _compile(tuple(c["decay_exclude"]), "optim.decay_exclude")
  _compile(c["trainable"], "optim.trainable")
  return c


def learning_rate_schedule(cfg, total_steps: int) -> Callable[[Any], jax.Array]:
  """step → learning rate (float32; works on traced steps).

  Linear warmup from 0 at step 0 to peak_lr at warmup_steps, then
  cosine:   final + (peak - final) * (1 + cos(pi * p)) / 2,
  linear:   peak + (final - peak) * p,          p = (step - warmup) / (total - warmup) in [0, 1]
  constant: peak,
  with final = final_lr_fraction * peak; held at `final` after total_steps.
  """
  c = _validate(cfg, total_steps)
  peak, warmup, kind = float(c["peak_lr"]), int(c["warmup_steps"]), c["schedule"]
  final = float(c["final_lr_fraction"]) * peak

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    warm = peak * step / warmup if warmup else jnp.float32(peak)
    if kind == "constant":
      after = jnp.float32(peak)
    else:
      p = jnp.clip((step - warmup) / (total_steps - warmup), 0.0, 1.0)
      if kind == "cosine":
        after = final + (peak - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * p))
      else:
        after = peak + (final - peak) * p
    return jnp.where(step < warmup, warm, after).astype(jnp.float32)

  return schedule


def make_optimizer(cfg, total_steps: int, params) -> optax.GradientTransformation:
  """The training optimizer: [clip] + AdamW(schedule, decay mask) on trainable parameters.

  `params` (real or abstract) is used to check the masks: `trainable` must match at least one
  parameter. Frozen parameters get exactly zero updates and no optimizer moments.
  """
  c = _validate(cfg, total_steps)
  trainable = trainable_mask(params, c["trainable"])
  if not any(jax.tree.leaves(trainable)):
    raise ValueError(f"optim.trainable={c['trainable']!r} matches no parameter; parameter "
                     f"paths are e.g. {paths(params)[:6]}")
  exclude = tuple(c["decay_exclude"])
  inner = []
  if c["clip_norm"] > 0:
    inner.append(optax.clip_by_global_norm(float(c["clip_norm"])))
  inner.append(optax.adamw(
      learning_rate=learning_rate_schedule(cfg, total_steps), b1=float(c["b1"]),
      b2=float(c["b2"]), eps=float(c["eps"]), weight_decay=float(c["weight_decay"]),
      mask=lambda p: decay_mask(p, exclude)))
  train_tx = optax.chain(*inner)
  if all(jax.tree.leaves(trainable)):
    return train_tx
  regex = c["trainable"]
  labels = lambda p: jax.tree.map(
      lambda t: _TRAIN if t else _FROZEN, trainable_mask(p, regex))
  return optax.multi_transform({_TRAIN: train_tx, _FROZEN: optax.set_to_zero()}, labels)
