"""The pure jitted train and eval steps.

- The model is split once (the spec's graphdef is static), and the step merges it with the
  parameter dict inside the traced function. The step is ONE pure function
  `(state, batch) -> (state, metrics)`, jitted with the state donated.
- A batch transform `(batch, rng, step) -> batch` (a registered augmentation, `augment/`)
  runs first, inside the jitted step; its randomness is `fold_in(state.rng, state.step)`, a
  function of the seed and the step only, so an interrupted and resumed run draws the same.
  It may add per-example RoPE values (`batch["rope"]`, a `rope.RopeInputs`) and report its
  draws as float32 scalars under `batch["augment_metrics"]`, which join the step's metrics as
  `augment_<name>`.
- Loss: mean next-token cross-entropy over `loss_mask`, in float32, through
  `model.loss.batch_loss_sums` (chunked over the sequence, so long sequences never hold
  [B, T, vocab] logits). With `grad_accum` > 1 the batch is split into micro-batches scanned
  inside the step; summed NLL, token counts and gradients are accumulated in float32 and divided
  by the total token count once, so accumulation equals the large batch exactly (up to summation
  order) and there is one optimizer update per step.
- Frozen parameters (paths not matching `optim.trainable`, or with an adapter everything but the
  adapter: the spec's trainable mask) are split off before differentiating: the loss is a
  function of the trainable part only, so no weight gradient of a frozen parameter is ever
  formed (an adapter run skips the base model's weight-gradient GEMMs, a third of its FLOPs),
  gradient accumulators and optimizer state exist for the trainable part only, `grad_norm` is
  the norm of what the optimizer updates, and the frozen buffers pass through the donated
  state untouched (bitwise).
- Stochastic seams (adapter dropout) draw from `fold_in(fold_in(state.rng, DROPOUT_STREAM),
  step)`, folded with the micro-batch index: resumed runs draw the same masks.
- Micro-batch a takes rows a, a+A, a+2A, ... of the global batch. With the batch sharded in
  contiguous row blocks whose size is a multiple of A (what `validate_mesh` requires), those
  rows are already on the right device: the split moves no data.
"""
from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from llama_jax.core import compilation as compile_lib
from llama_jax.model import loss as loss_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import logical_axes
from llama_jax.parallel.logical_axes import Rules
from llama_jax.rope import registry as rope_registry
from llama_jax.training.augment import registry as augment_registry
from llama_jax.training.preemption import STOP_KEY
from llama_jax.training.state import TrainState

BATCH_KEYS = loss_lib.BATCH_KEYS
LOSS_CHUNK = loss_lib.LOSS_CHUNK

BatchTransform = Callable[[dict, jax.Array, jax.Array], dict]
DROPOUT_STREAM = 0xD50  # the dropout keys' stream, apart from the augmentations' fold_in(rng, step)


def _split_micro(batch: dict, accum: int, rules: Rules | None) -> dict:
  """[B, ...] → [A, B/A, ...]; micro-batch a holds rows a, a+A, ... (device-local, see above).

  The [B, T] arrays keep their length axis's sharding; per-example RoPE values ([B] or
  [B, head_dim/2]) are split by row, and shared ones (no batch axis) go to every micro-batch.
  """
  def split(x, per_token: bool):
    b = x.shape[0]
    x = x.reshape((b // accum, accum) + x.shape[1:]).swapaxes(0, 1)
    if rules is not None:
      names = ((None, "batch", "length" if per_token else None) + (None,) * x.ndim)[:x.ndim]
      x = jax.lax.with_sharding_constraint(x, logical_axes.spec(names, rules))
    return x

  out = {k: split(v, True) for k, v in batch.items() if k != loss_lib.ROPE_KEY}
  inputs = batch.get(loss_lib.ROPE_KEY)
  if inputs is not None:
    values = {}
    for name, x in inputs.given().items():
      per_example = x.ndim == (2 if name in rope_registry.VECTOR_FIELDS else 1)
      values[name] = split(x, False) if per_example else jnp.broadcast_to(x, (accum,) + x.shape)
    out[loss_lib.ROPE_KEY] = inputs.replace(**values)
  return out


def make_train_step(spec: ModelSpec, tx, schedule: Callable, *, grad_accum: int = 1,
                    shardings: TrainState | None = None, loss_chunk: int = LOSS_CHUNK,
                    compilation: compile_lib.StepCompilation | None = None,
                    transform: BatchTransform | None = None):
  """The jitted `(state, batch) -> (state, metrics)`, state donated.

  batch: dict of global arrays [B, T] (`BATCH_KEYS`). metrics: loss (mean NLL per target
  token), grad_norm (global norm of the trainable gradients before clipping), learning_rate
  (of this update), tokens (target tokens in the batch); float32 scalars; plus `stop`, the
  maximum of the processes' stop flags, when the batch carries them under `STOP_KEY` (the
  training loop's preemption agreement, `preemption.py`). The trainable mask is
  the spec's, built from the same `optim.trainable` as the optimizer. Call it inside
  `jax.set_mesh(mesh)` when the spec has rules. `compilation` defaults to the default backend's
  (`core.compilation.for_backend`); `transform` is a batch augmentation run inside the step.
  """
  compilation = compilation or compile_lib.for_backend()

  def loss_sums(trainable, frozen, batch, rng):
    model = spec.merge(spec_lib.combine(trainable, frozen))
    return loss_lib.batch_loss_sums(model, batch, loss_chunk, compilation.vocab_chunk, rng=rng)

  grad_fn = jax.value_and_grad(loss_sums, has_aux=True)

  def step(state: TrainState, batch: dict):
    # The processes' stop flags, when the loop sends them: agreed here (preemption.py).
    stop_flags = batch.get(STOP_KEY)
    batch = {k: batch[k] for k in BATCH_KEYS}
    drawn = {}
    if transform is not None:
      batch = dict(transform(batch, jax.random.fold_in(state.rng, state.step), state.step))
      drawn = batch.pop(augment_registry.METRICS_KEY, {})
    rng = jax.random.fold_in(jax.random.fold_in(state.rng, DROPOUT_STREAM), state.step)
    trainable, frozen = spec.split_trainable(state.params)
    if grad_accum == 1:
      (nll, count), grads = grad_fn(trainable, frozen, batch, rng)
      grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
    else:
      zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), trainable)
      if shardings is not None:
        zeros = jax.lax.with_sharding_constraint(
            zeros, spec.split_trainable(shardings.params)[0])

      def micro_step(carry, xs):
        g_acc, nll_acc, n_acc = carry
        index, micro = xs
        (nll, n), g = grad_fn(trainable, frozen, micro, jax.random.fold_in(rng, index))
        g_acc = jax.tree.map(lambda a, x: a + x.astype(jnp.float32), g_acc, g)
        return (g_acc, nll_acc + nll, n_acc + n), None

      init = (zeros, jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
      micro = (jnp.arange(grad_accum), _split_micro(batch, grad_accum, spec.rules))
      (grads, nll, count), _ = jax.lax.scan(micro_step, init, micro)
    denom = jnp.maximum(count, 1.0)  # a batch with no target tokens gives loss 0, no NaN
    grads = jax.tree.map(lambda g, p: (g / denom).astype(p.dtype), grads, trainable)
    updates, opt_state = tx.update(grads, state.opt_state, trainable)
    params = spec_lib.combine(optax.apply_updates(trainable, updates), frozen)
    metrics = {"loss": nll / denom, "grad_norm": optax.tree.norm(grads),
               "learning_rate": schedule(state.step), "tokens": count,
               **{f"augment_{k}": jnp.asarray(v, jnp.float32) for k, v in drawn.items()}}
    if stop_flags is not None:
      metrics["stop"] = jnp.max(stop_flags)
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics

  out = None if shardings is None else (shardings, None)
  return jax.jit(step, donate_argnums=0, out_shardings=out,
                 compiler_options=compilation.xla_options)


def make_eval_step(spec: ModelSpec, loss_chunk: int = LOSS_CHUNK,
                   compilation: compile_lib.StepCompilation | None = None):
  """The jitted `(params, batch) -> (summed NLL, token count)` for held-out perplexity."""
  compilation = compilation or compile_lib.for_backend()

  def eval_step(params, batch):
    return loss_lib.batch_loss_sums(spec.merge(params), {k: batch[k] for k in BATCH_KEYS},
                                    loss_chunk, compilation.vocab_chunk)

  return jax.jit(eval_step, compiler_options=compilation.xla_options)
