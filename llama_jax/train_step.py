"""Train state, its sharded creation, and the pure jitted train and eval steps.

- `TrainState` (step, params, opt_state, rng) is a plain pytree: params is the nested dict of
  `model.to_params` (paths as in `weights.py`), so checkpoints, `init_from` weights and the
  optimizer all see the same tree.
- The state is never built on one host: `abstract_state` traces the initialiser with
  `jax.eval_shape`, `state_shardings` maps every leaf to a NamedSharding through the logical
  axes (optax moments borrow their parameter's axes), and `create_state` runs the initialiser
  under `jax.jit(..., out_shardings=...)` so each device materialises only its shard.
- The model is split once (`nnx.split`): the graphdef is static, and the step merges it with
  the parameter dict inside the traced function. The step is ONE pure function
  `(state, batch) -> (state, metrics)`, jitted with the state donated.
- Loss: mean next-token cross-entropy over `loss_mask`, in float32, through
  `loss.cross_entropy` (chunked over the sequence, so long sequences never hold [B, T, vocab]
  logits). With `grad_accum` > 1 the batch is split into micro-batches scanned inside the
  step; summed NLL, token counts and gradients are accumulated in float32 and divided by the
  total token count once, so accumulation equals the large batch exactly (up to summation
  order) and there is one optimizer update per step.
- Frozen parameters (paths not matching `optim.trainable`) enter the loss through
  `stop_gradient`, so their weight gradients are never computed (an adapter run skips the
  base model's weight-gradient GEMMs, a third of its FLOPs) and `grad_norm` is the norm of
  what the optimizer updates.
- Micro-batch a takes rows a, a+A, a+2A, ... of the global batch. With the batch sharded in
  contiguous row blocks whose size is a multiple of A (what `validate_mesh` requires), those
  rows are already on the right device: the split moves no data.
"""
from __future__ import annotations

from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import optax
from flax import nnx

from llama_jax import compile_options as compile_lib
from llama_jax import logical_axes
from llama_jax import loss as loss_lib
from llama_jax import model as model_lib
from llama_jax import optim
from llama_jax import sharding as sharding_lib
from llama_jax.logical_axes import Rules
from llama_jax.model_config import ModelConfig

BATCH_KEYS = ("tokens", "targets", "segment_ids", "positions", "loss_mask")
LOSS_CHUNK = 1024  # sequence positions per cross-entropy chunk


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32[]: optimizer updates applied so far
  params: Any  # nested dict of arrays, as model.to_params
  opt_state: Any
  rng: jax.Array  # uint32[2]; per-step randomness is fold_in(rng, step), so resume is exact


def abstract_params(model_cfg: ModelConfig) -> dict:
  """The parameter dict as ShapeDtypeStructs (no memory)."""
  return nnx.to_pure_dict(nnx.state(model_lib.abstract(model_cfg), nnx.Param))


def make_optimizer(model_cfg: ModelConfig, optim_cfg, total_steps: int):
  """(optax transformation, learning-rate schedule) for this model's parameter tree."""
  tx = optim.make_optimizer(optim_cfg, total_steps, abstract_params(model_cfg))
  return tx, optim.learning_rate_schedule(optim_cfg, total_steps)


def init_state(model_cfg: ModelConfig, tx, seed: int, params=None) -> TrainState:
  """The initial state (pure; jit it). `params=None` draws a random init from `seed`."""
  if params is None:
    params = model_lib.to_params(model_lib.init(model_cfg, seed))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.PRNGKey(seed))


def abstract_state(model_cfg: ModelConfig, tx, seed: int = 0) -> TrainState:
  """The state's shapes and dtypes via `jax.eval_shape`: nothing is allocated."""
  return jax.eval_shape(lambda: init_state(model_cfg, tx, seed))


def state_shardings(abstract: TrainState, model_cfg: ModelConfig, mesh, rules: Rules):
  """A NamedSharding for every leaf of the state (params and Adam moments by logical axes)."""
  return sharding_lib.tree_shardings(abstract, mesh, rules,
                                     param_axes=model_lib.abstract(model_cfg))


def create_state(model_cfg: ModelConfig, tx, seed: int, shardings: TrainState,
                 params=None) -> TrainState:
  """The initial state created directly in `shardings` (no full host copy).

  `params` (e.g. `init_from` weights, already sharded like `shardings.params`) replaces the
  random init; the optimizer state is always fresh.
  """
  if params is None:
    return jax.jit(lambda: init_state(model_cfg, tx, seed), out_shardings=shardings)()
  return jax.jit(lambda p: init_state(model_cfg, tx, seed, p), out_shardings=shardings,
                 donate_argnums=0)(params)


# ------------------------------------------------------------------------------ steps
def _loss_sums(graphdef, params, batch, loss_chunk: int, vocab_chunk: int = 0):
  """(summed masked NLL, masked token count), float32 scalars, for one (micro-)batch."""
  model = nnx.merge(graphdef, params)
  hidden, _ = model.features(batch["tokens"], batch["positions"], batch["segment_ids"])
  return loss_lib.cross_entropy(hidden, model.head(), batch["targets"], batch["loss_mask"],
                                loss_chunk, vocab_chunk)


def _split_micro(batch: dict, accum: int, rules: Rules | None) -> dict:
  """[B, ...] → [A, B/A, ...]; micro-batch a holds rows a, a+A, ... (device-local, see above)."""
  def split(x):
    b = x.shape[0]
    x = x.reshape((b // accum, accum) + x.shape[1:]).swapaxes(0, 1)
    if rules is not None:
      names = (None, "batch", "length")[:x.ndim] + (None,) * max(0, x.ndim - 3)
      x = jax.lax.with_sharding_constraint(x, logical_axes.spec(names, rules))
    return x
  return {k: split(v) for k, v in batch.items()}


def make_train_step(model_cfg: ModelConfig, tx, schedule: Callable, grad_accum: int = 1,
                    rules: Rules | None = None, shardings: TrainState | None = None,
                    loss_chunk: int = LOSS_CHUNK, *, trainable: str,
                    compilation: compile_lib.StepCompilation | None = None):
  """The jitted `(state, batch) -> (state, metrics)`, state donated.

  batch: dict of global arrays [B, T] (`BATCH_KEYS`). metrics: loss (mean NLL per target
  token), grad_norm (global norm of the trainable gradients before clipping), learning_rate
  (of this update), tokens (target tokens in the batch); float32 scalars. `trainable` must be
  the `optim.trainable` the optimizer was built with (required: a narrower regex would starve
  parameters the optimizer updates of their gradients). Call it inside
  `jax.set_mesh(mesh)` when `rules` are given. `compilation` defaults to the default backend's
  (`compile_options.for_backend`).
  """
  compilation = compilation or compile_lib.for_backend()
  graphdef, _ = nnx.split(model_lib.abstract(model_cfg, rules))
  mask = optim.trainable_mask(abstract_params(model_cfg), trainable)
  all_trainable = all(jax.tree.leaves(mask))

  def loss_sums(params, batch):
    if not all_trainable:
      params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)
    return _loss_sums(graphdef, params, batch, loss_chunk, compilation.vocab_chunk)

  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def step(state: TrainState, batch: dict):
    batch = {k: batch[k] for k in BATCH_KEYS}
    if grad_accum == 1:
      (nll, count), grads = grad_fn(state.params, batch)
      grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    else:
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), state.params)
      if shardings is not None:
        zeros = jax.lax.with_sharding_constraint(zeros, shardings.params)

      def micro_step(carry, micro):
        g_acc, nll_acc, n_acc = carry
        (nll, n), g = grad_fn(state.params, micro)
        g_acc = jax.tree.map(lambda a, x: a + x.astype(jnp.float32), g_acc, g)
        return (g_acc, nll_acc + nll, n_acc + n), None

      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
      (grads, nll, count), _ = jax.lax.scan(micro_step, init,
                                            _split_micro(batch, grad_accum, rules))
    denom = jnp.maximum(count, 1.0)  # a batch with no target tokens gives loss 0, no NaN
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step), "tokens": count}
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  out = None if shardings is None else (shardings, None)
  return jax.jit(step, donate_argnums=0, out_shardings=out,
                 compiler_options=compilation.xla_options)


def make_eval_step(model_cfg: ModelConfig, rules: Rules | None = None,
                   loss_chunk: int = LOSS_CHUNK,
                   compilation: compile_lib.StepCompilation | None = None):
  """The jitted `(params, batch) -> (summed NLL, token count)` for held-out perplexity."""
  compilation = compilation or compile_lib.for_backend()
  graphdef, _ = nnx.split(model_lib.abstract(model_cfg, rules))

  def eval_step(params, batch):
    return _loss_sums(graphdef, params, {k: batch[k] for k in BATCH_KEYS}, loss_chunk,
                      compilation.vocab_chunk)

  return jax.jit(eval_step, compiler_options=compilation.xla_options)
