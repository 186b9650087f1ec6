"""Greedy decoding with each layer's weights and cache sliced out of their stacks once, before
the loop (what `generate` does), against the stacked form the loop slices at every token; one
process, alternated.

  python experiments/bench/decode_ab.py [BATCH ...]     # default: 1 8

bench_34m's model with random weights, `attention="auto"`, a 512-token prompt in a 640-slot
cache, 64 greedy tokens per call; prints the median of 3 alternated calls of each, per token.
"""
import dataclasses
import functools
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from llama_jax.inference import generate as gen
from llama_jax.model import llama as model_lib
from llama_jax.training import recipes, validation

PROMPT, SLOTS, TOKENS, REPEATS = 512, 640, 64, 3


@functools.partial(jax.jit, static_argnums=(0, 4))
def _greedy(graphdef, state, cache, lengths, presliced):
  model = nnx.merge(graphdef, state)
  layers = model.layer_states() if presliced else None
  cache = cache.per_layer() if presliced else cache

  def body(i, carry):
    cache, last = carry
    logits, cache = gen.step_logits(model, last, lengths + i, cache, None, layers)
    return cache, jnp.argmax(logits, -1).astype(jnp.int32)

  return jax.lax.fori_loop(0, TOKENS, body, (cache, jnp.zeros(lengths.shape, jnp.int32)))[1]


def main(batches):
  root = Path(__file__).resolve().parents[2]
  cfg = validation.validate(recipes.load(str(root / "configs" / "bench_34m.py")),
                            check_paths=False).model
  model = model_lib.init(dataclasses.replace(cfg, attention="auto"))
  graphdef, state = nnx.split(model)
  for b in batches:
    rows = np.random.RandomState(0).randint(0, cfg.vocab_size, (b, PROMPT)).tolist()
    padded = gen.pad_prompts(rows)
    _, cache = gen.prefill(model, padded, SLOTS)
    lengths = jnp.asarray(padded.lengths)
    times = {True: [], False: []}
    for p in times:
      _greedy(graphdef, state, cache, lengths, p).block_until_ready()  # compile
    for _ in range(REPEATS):
      for p in times:
        start = time.perf_counter()
        _greedy(graphdef, state, cache, lengths, p).block_until_ready()
        times[p].append(time.perf_counter() - start)
    once, every = (statistics.median(times[p]) / TOKENS * 1e3 for p in (True, False))
    print(f"batch {b}: sliced once {once:.1f} ms/token, sliced per token {every:.1f} ms/token: "
          f"{every / once:.2f}x", flush=True)


if __name__ == "__main__":
  main([int(a) for a in sys.argv[1:]] or [1, 8])
