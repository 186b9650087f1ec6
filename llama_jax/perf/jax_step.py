"""One llama_jax train step, compiled ahead of time and timed: the JAX side of `bench.py`.

The step is the trainer's own (`training.step.make_train_step`: chunked cross-entropy, AdamW with
clipping, state donated, the backend's compile options unless `compilation` says otherwise), so
the benchmark measures what training runs. Compilation is timed
separately (`lower` + `compile`), memory comes from the compiled executable's
`memory_analysis()` (what XLA plans to hold: arguments + outputs - donated aliases + temporaries;
exact on every backend, nothing needs to run), and on GPUs also from the allocator's peak.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from llama_jax.model.config import ModelConfig
from llama_jax.model.spec import ModelSpec
from llama_jax.training import state as state_lib
from llama_jax.training import step as step_lib

BATCH_DTYPES = {"tokens": np.int32, "targets": np.int32, "segment_ids": np.int32,
                "positions": np.int32, "loss_mask": np.float32}


def synthetic_batch(batch: int, seq_len: int, vocab_size: int, seed: int = 0) -> dict:
  """Random tokens, one document per row (segment id 1): the shapes a packed loader gives."""
  rng = np.random.RandomState(seed)
  tokens = rng.randint(0, vocab_size, size=(batch, seq_len + 1)).astype(np.int32)
  return {
      "tokens": tokens[:, :-1], "targets": tokens[:, 1:],
      "segment_ids": np.ones((batch, seq_len), np.int32),
      "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch, seq_len)).copy(),
      "loss_mask": np.ones((batch, seq_len), np.float32),
  }


def abstract_batch(batch: int, seq_len: int, sharding=None) -> dict:
  return {k: jax.ShapeDtypeStruct((batch, seq_len), dt, sharding=sharding)
          for k, dt in BATCH_DTYPES.items()}


def memory_from_analysis(analysis) -> dict:
  """Bytes per device from `Compiled.memory_analysis()`; `peak` = what is live at once at most."""
  if analysis is None:
    return {}
  get = lambda name: int(getattr(analysis, name, 0) or 0)
  args, out, alias, temp = (get("argument_size_in_bytes"), get("output_size_in_bytes"),
                            get("alias_size_in_bytes"), get("temp_size_in_bytes"))
  return {"argument_bytes": args, "output_bytes": out, "alias_bytes": alias, "temp_bytes": temp,
          "peak_bytes": args + out - alias + temp}


def flops_from_cost_analysis(compiled) -> float | None:
  """XLA's own FLOP count of the compiled step (None when the backend gives none).

  It counts loops once per body on some backends (the layer scan, the attention block loops),
  so it is a cross-check of the model formula only for unrolled, unchunked steps.
  """
  try:
    cost = compiled.cost_analysis()
  except Exception:
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or "flops" not in cost:
    return None
  return float(cost["flops"])


class JaxStep:
  """The compiled train step for one (model config, batch, seq_len), with its state."""

  def __init__(self, model_cfg: ModelConfig, optim_cfg, batch: int, seq_len: int,
               seed: int = 0, total_steps: int = 1000, compilation=None, adapter=None):
    """`adapter`: a `llama_jax.adapters` adapter to train (the base frozen), or None."""
    self.model_cfg, self.batch, self.seq_len, self.seed = model_cfg, batch, seq_len, seed
    self.spec = ModelSpec.build(model_cfg, trainable=optim_cfg.trainable, adapter=adapter)
    self.tx, schedule = state_lib.make_optimizer(self.spec, optim_cfg, total_steps)
    self._jitted = step_lib.make_train_step(self.spec, self.tx, schedule,
                                            compilation=compilation)
    self.compiled = None
    self.state = None
    self.data = None

  def compile(self) -> dict:
    """Lowers and compiles for abstract inputs; returns compile time, memory and XLA FLOPs."""
    start = time.perf_counter()
    abstract = state_lib.abstract_state(self.spec, self.tx, self.seed)
    lowered = self._jitted.lower(abstract, abstract_batch(self.batch, self.seq_len))
    self.compiled = lowered.compile()
    seconds = time.perf_counter() - start
    return {"compile_seconds": seconds,
            "memory": memory_from_analysis(self.compiled.memory_analysis()),
            "xla_flops_per_step": flops_from_cost_analysis(self.compiled)}

  def setup(self) -> None:
    """Materialises the state and a batch on the default device."""
    cfg, spec, tx, seed = self.model_cfg, self.spec, self.tx, self.seed
    self.state = jax.jit(lambda: state_lib.init_state(spec, tx, seed))()
    data = synthetic_batch(self.batch, self.seq_len, cfg.vocab_size, seed)
    self.data = {k: jnp.asarray(v) for k, v in data.items()}

  def step(self) -> float:
    """Runs one step to completion; returns its wall time in seconds."""
    start = time.perf_counter()
    self.state, metrics = self.compiled(self.state, self.data)
    jax.block_until_ready((self.state, metrics))
    self.last_loss = float(metrics["loss"])
    return time.perf_counter() - start

  def close(self) -> None:
    self.state = self.data = self.compiled = None


def device_peak_bytes(device=None) -> int | None:
  """The allocator's peak bytes in use (GPU/TPU; running maximum over the process), else None."""
  device = device or jax.devices()[0]
  try:
    stats = device.memory_stats()
  except Exception:
    return None
  return None if not stats else stats.get("peak_bytes_in_use")
