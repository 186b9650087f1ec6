"""A prefill with `prefill=True` (the prompt attends to its own keys) against the general cached
call (the prompt attends to every slot of the cache), in one process, alternated.

  python experiments/bench/prefill_ab.py [BATCH ...]     # default: 1 8

bench_34m's model with random weights, `attention="auto"` (what `load_hf` gives), a 512-token
prompt into a 640-slot cache; prints the median and the minimum of 5 alternated calls of each.
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
from llama_jax.model import llama as model_lib
from llama_jax.training import recipes, validation

PROMPT, SLOTS, REPEATS = 512, 640, 5


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _prefill(graphdef, state, tokens, segment_ids, slots, prefill):
  model = nnx.merge(graphdef, state)
  cache = model_lib.KVCache.init(model.cfg, tokens.shape[0], slots)
  hidden, cache = model.features(tokens, None, segment_ids, cache, prefill=prefill)
  return hidden[:, -1], cache


def _call(graphdef, state, tokens, segment_ids, prefill):
  return jax.block_until_ready(_prefill(graphdef, state, tokens, segment_ids, SLOTS, prefill))


def main(batches):
  root = Path(__file__).resolve().parents[2]
  cfg = validation.validate(recipes.load(str(root / "configs" / "bench_34m.py")),
                            check_paths=False).model
  graphdef, state = nnx.split(model_lib.init(dataclasses.replace(cfg, attention="auto")))
  for b in batches:
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (b, PROMPT)),
                         jnp.int32)
    segment_ids = jnp.ones((b, PROMPT), jnp.int32)
    call = functools.partial(_call, graphdef, state, tokens, segment_ids)
    times = {True: [], False: []}
    for p in times:
      call(p)  # compile
    for _ in range(REPEATS):
      for p in times:
        start = time.perf_counter()
        call(p)
        times[p].append(time.perf_counter() - start)
    own, every = (statistics.median(times[p]) for p in (True, False))
    print(f"batch {b}: prefill=True {own * 1e3:,.0f} ms ({b * PROMPT / own:,.0f} tok/s), "
          f"every slot {every * 1e3:,.0f} ms ({b * PROMPT / every:,.0f} tok/s): {every / own:.2f}x;"
          f" min {min(times[True]) * 1e3:,.0f} / {min(times[False]) * 1e3:,.0f} ms", flush=True)


if __name__ == "__main__":
  main([int(a) for a in sys.argv[1:]] or [1, 8])
