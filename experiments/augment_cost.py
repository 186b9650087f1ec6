"""What a batch augmentation costs per train step: E²-LLM and PoSE vs no augmentation.

The model and batch of `configs/tiny.py` (d_model 128, 4 layers, 8 x 256 tokens, float32) on
one device, synthetic packed rows (two documents each). Three jitted train steps are built —
plain, `e2llm` (g_max 20 in a 256-token window, one draw per step) and `pose` (target 4096;
max_position_embeddings is 4096 for all three, which changes nothing else) — and timed in
interleaved rounds: each round runs `--steps` steps of every variant, in a rotating order, so
load changes on a shared machine hit all three alike. Reported per variant: the ratio of its
median (and fastest) step time to the plain step's in the same round, as the median and range
over rounds; and, with less noise, the transform alone (jitted by itself on the same batch,
median of `--transform_calls`) as a fraction of the plain step, and XLA's own count of the
compiled steps' FLOPs and bytes accessed. Goal: < 2% (ratio < 1.02).

  python experiments/augment_cost.py [--rounds=10 --steps=10]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=10)
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--transform_calls", type=int, default=200)
  args = parser.parse_args()

  import jax
  import numpy as np

  from llama_jax.model.config import ModelConfig
  from llama_jax.model.spec import ModelSpec
  from llama_jax.training import augment, recipes
  from llama_jax.training import state as state_lib
  from llama_jax.training import step as train_step

  c = recipes.load("tiny")
  c.model.max_position_embeddings = 4096
  cfg = ModelConfig.from_dict(c.model.to_dict())
  b, t = c.batch_size, c.seq_len
  spec = ModelSpec.build(cfg)
  tx, schedule = state_lib.make_optimizer(spec, c.optim, c.steps)

  rng = np.random.RandomState(0)
  cut = rng.randint(16, t - 16, (b, 1))
  segments = np.where(np.arange(t)[None] < cut, 1, 2).astype(np.int32)
  batch = {"tokens": rng.randint(0, cfg.vocab_size, (b, t)).astype(np.int32),
           "targets": rng.randint(0, cfg.vocab_size, (b, t)).astype(np.int32),
           "segment_ids": segments,
           "positions": np.where(segments == 1, np.arange(t)[None],
                                 np.arange(t)[None] - cut).astype(np.int32),
           "loss_mask": np.ones((b, t), np.float32)}
  batch = jax.device_put(batch)

  def variant(name, **options):
    a = c.augment
    a.name = name
    if name:
      a[name].update(options)
    transform = augment.transform_for(a, cfg, t)
    fn = train_step.make_train_step(spec, tx, schedule, transform=transform)
    state = state_lib.create_state(spec, tx, 0, None)
    cost = fn.lower(state, batch).compile().cost_analysis()  # XLA's count, no timing noise
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    state, m = fn(state, batch)  # compile
    jax.block_until_ready(m)
    alone = None
    if transform is not None:
      jitted, key = jax.jit(transform), jax.random.PRNGKey(0)
      jax.block_until_ready(jitted(batch, key, 0))
      calls = []
      for i in range(args.transform_calls):
        start = time.perf_counter()
        jax.block_until_ready(jitted(batch, jax.random.fold_in(key, i), i))
        calls.append(time.perf_counter() - start)
      alone = float(np.median(calls))
    return {"fn": fn, "state": state, "times": [], "fastest": [], "alone": alone,
            "flops": float(cost.get("flops", 0.0)),
            "bytes": float(cost.get("bytes accessed", 0.0))}

  variants = {"plain": variant(""), "e2llm": variant("e2llm", g_max=20, window=256),
              "pose": variant("pose", target_length=4096)}
  names = list(variants)
  for r in range(args.rounds):
    order = names[r % 3:] + names[:r % 3]
    for name in order:
      v = variants[name]
      steps = []
      for _ in range(args.steps):
        start = time.perf_counter()
        v["state"], m = v["fn"](v["state"], batch)
        jax.block_until_ready(m)
        steps.append(time.perf_counter() - start)
      v["times"].append(float(np.median(steps)))
      v["fastest"].append(float(np.min(steps)))
  plain = np.array(variants["plain"]["times"])
  report = {"device": jax.devices()[0].device_kind, "rounds": args.rounds,
            "steps_per_round": args.steps,
            "plain_step_ms": {"median": 1e3 * float(np.median(plain)),
                              "min": 1e3 * float(plain.min()), "max": 1e3 * float(plain.max())}}
  for name in ("e2llm", "pose"):
    ratio = np.array(variants[name]["times"]) / plain
    # The fastest step of each round: the least disturbed by other jobs on a shared machine.
    fastest = np.array(variants[name]["fastest"]) / np.array(variants["plain"]["fastest"])
    report[name] = {"ratio_median": float(np.median(ratio)), "ratio_min": float(ratio.min()),
                    "ratio_max": float(ratio.max()),
                    "fastest_ratio_median": float(np.median(fastest)),
                    "fastest_ratio_min": float(fastest.min()),
                    "fastest_ratio_max": float(fastest.max()),
                    "step_ms_median": 1e3 * float(np.median(variants[name]["times"])),
                    "transform_alone_ms": 1e3 * variants[name]["alone"],
                    "transform_alone_fraction": variants[name]["alone"] / float(np.median(plain)),
                    "xla_flops_ratio": variants[name]["flops"] / variants["plain"]["flops"],
                    "xla_bytes_ratio": variants[name]["bytes"] / variants["plain"]["bytes"]}
  print(json.dumps(report, indent=1))


if __name__ == "__main__":
  main()
