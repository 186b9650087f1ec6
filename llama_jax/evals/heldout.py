"""Held-out loss: next-token loss and perplexity on held-out batches of the run's own data.

The batches come from the data config's held-out split (`data.eval_split`, else the
`heldout_fraction` of documents kept out of training), the same `batches` of them at every
evaluation, so the numbers of one run are comparable step to step. Token-weighted: the loss is
the summed NLL over all scored tokens divided by their number.
"""
from __future__ import annotations

import copy
import functools
import math

import jax
import jax.numpy as jnp
from flax import nnx

from llama_jax.core import compilation
from llama_jax.core.errors import ConfigError, DataError
from llama_jax.evals import registry
from llama_jax.evals.registry import Option
from llama_jax.model import loss as loss_lib


@functools.lru_cache(maxsize=8)
def loss_fn(graphdef):
  """The jitted `(state, batch) -> (summed NLL, token count)` of one model graph."""
  settings = compilation.for_backend()

  def fn(state, batch):
    return loss_lib.batch_loss_sums(nnx.merge(graphdef, state),
                                    {k: batch[k] for k in loss_lib.BATCH_KEYS},
                                    loss_lib.LOSS_CHUNK, settings.vocab_chunk)

  return jax.jit(fn, compiler_options=settings.xla_options)


@registry.register
class HeldOut(registry.Evaluation):
  name = "heldout"
  description = "next-token loss and perplexity on held-out batches of the run's data"
  options = {"batches": Option(4, "held-out batches per evaluation (the same ones each time)")}
  needs = ("tokenizer", "data")
  sharded = True

  @classmethod
  def check(cls, c):
    if c["batches"] < 1:
      raise ConfigError(f"heldout batches={c['batches']} must be >= 1")

  def __init__(self, options, context):
    super().__init__(options, context)
    from llama_jax import data
    self._it = data.make_iterator(
        context.data, context.tokenizer, split="eval", batch_size=context.batch_size,
        seq_len=context.seq_len, seed=context.seed, process_index=context.process_index,
        process_count=context.process_count)
    self._start = copy.deepcopy(self._it.get_state())

  def run(self, model) -> registry.Result:
    graphdef, state = nnx.split(model)
    fn = loss_fn(graphdef)
    place = self.context.place or (lambda b: {k: jnp.asarray(v) for k, v in b.items()})
    self._it.set_state(copy.deepcopy(self._start))  # the same held-out batches every time
    nll, count = 0.0, 0.0
    for _ in range(self.config["batches"]):
      try:
        local = next(self._it)
      except StopIteration:
        break
      s, n = fn(state, place(local))
      nll, count = nll + float(s), count + float(n)
    if not count:
      raise DataError("the held-out split produced no target tokens; raise "
                      "data.heldout_fraction or set data.eval_split")
    loss = nll / count
    metrics = {"loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
    return registry.Result(metrics, dict(metrics))

  def close(self) -> None:
    self._it.close()
