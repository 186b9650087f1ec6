"""Stop latency after SIGTERM, and what the per-step stop check costs, with two processes.

Two local processes x 4 CPU devices (jax.distributed over gloo) run a stand-in train step: a
jitted chain of float32 matmuls on a batch sharded over all 8 devices, ending in a cross-process
reduction (as a real step's gradient reduction does), after `--host_ms` of host work per step
(a sleep standing for the next batch's preparation, as `next(train_it)` in the loop). Three ways
to check for a stop request after every step are timed over the same steps, interleaved:

  none      no check (the floor)
  agreed    the trainer's: each process's flag rides in its batch rows
            (`PreemptionGuard.batch_flags`), the step returns their max, and the previous
            step's value decides (`stop_now`)
  blocking  `PreemptionGuard.should_stop`: an all-gather of the flags through
            multihost_utils after every step, which waits for the step to finish

For each: ms per step, and ms per step the host spent in the check (waiting = a stall).
Then a real SIGTERM is sent to process 1 alone at a random moment of an `agreed` run; each
process reports the step at which its loop first saw its own signal (process 0 has none) and
the step at which it stopped.

  python experiments/preemption_latency.py                 # 3 x 3 timed runs, 3 SIGTERM trials
  python experiments/preemption_latency.py --trials=10 --steps=100 --host_ms=50

Measured (2-core development VM shared with other jobs, defaults: 60 steps, 20 ms of host
work, 3 interleaved runs each; ms per step, in parentheses the ms the host waited in the check):
  none      27.0 (0.0)    runs 26.7, 27.0, 32.4
  agreed    30.7 (0.5)    runs 30.3, 30.7, 30.8
  blocking  43.4 (13.0)   runs 43.0, 43.4, 59.0
The blocking all-gather makes the host wait for each step before it prepares the next batch
(the 20 ms of host work no longer overlap the step); the trainer's agreement costs the host
~0.5 ms a step (building the flags' rows) and no wait. Three SIGTERMs to process 1: both
processes stopped one step after the first step that carried the flag (steps 132, 109, 84).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

WORKER = r"""
import json, os, signal, sys, time
pid, port, mode, steps, size, host_ms, report = (
    int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]),
    float(sys.argv[6]), sys.argv[7])
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.training import preemption

mesh = mesh_lib.make_mesh(dict(data=8))
sharding = NamedSharding(mesh, P(("data", "fsdp", "tensor", "sequence")))
w = jnp.eye(size, dtype=jnp.float32) * 0.5

@jax.jit
def step_fn(x):
  for _ in range(4):
    x = jnp.tanh(x @ w)
  return x - x.mean()  # the mean over the whole batch crosses the processes


@jax.jit
def step_with_flags(x, batch):  # as the train step: the flags ride in, their max comes out
  return step_fn(x), jnp.max(batch[preemption.STOP_KEY])


def flags_batch(guard):  # as the loop: this process's 4 rows of the global batch of 8 rows
  from llama_jax.parallel import sharding as sharding_lib
  from llama_jax.parallel.logical_axes import DEFAULT_RULES
  return sharding_lib.global_batch({preemption.STOP_KEY: guard.batch_flags(4)}, mesh,
                                   DEFAULT_RULES)

x = jax.make_array_from_callback((8 * 64, size), sharding,
                                 lambda idx: np.ones((64, size), np.float32))
with jax.set_mesh(mesh), preemption.PreemptionGuard() as guard:
  for _ in range(3):  # compile and warm up every path
    x = step_fn(x)
    guard.should_stop
    x, agreed = step_with_flags(x, flags_batch(guard))
  x.block_until_ready()
  guard._pending = None  # forget the warm-up steps
  print("ready", flush=True)
  signalled_at, step, waited, start = None, 0, 0.0, time.perf_counter()
  while step < steps:
    time.sleep(host_ms / 1e3)  # the host's share of a step: the next batch, as next(train_it)
    if signalled_at is None and guard.local_stop:
      signalled_at = step + 1  # the first step whose batch carries this process's flag
    if mode == "agreed":
      x, agreed = step_with_flags(x, flags_batch(guard))
    else:
      x = step_fn(x)
    step += 1
    t = time.perf_counter()
    stop = ((mode == "agreed" and guard.stop_now(agreed))
            or (mode == "blocking" and guard.should_stop))
    waited += time.perf_counter() - t
    if stop:
      break
  x.block_until_ready()
  seconds = time.perf_counter() - start
with open(report, "w") as f:
  json.dump({"pid": pid, "mode": mode, "steps": step, "ms_per_step": 1e3 * seconds / step,
             "ms_in_check": 1e3 * waited / step, "signalled_at": signalled_at,
             "stopped_at": step}, f)
"""


def run(mode: str, steps: int, size: int, host_ms: float, signal_after: float | None,
        tmp: str) -> list[dict]:
  import portpicker
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  reports = [os.path.join(tmp, f"{mode}_{i}.json") for i in range(2)]
  logs = [open(os.path.join(tmp, f"{mode}_{i}.log"), "w") for i in range(2)]
  procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(i), str(port), mode, str(steps),
                             str(size), str(host_ms), reports[i]], env=env, stdout=subprocess.PIPE,
                            stderr=logs[i], text=True) for i in range(2)]
  try:
    for p in procs:  # gloo prints its own lines on stdout
      while (line := p.stdout.readline()) and line.strip() != "ready":
        pass
      assert line, "a worker exited before it was ready; see " + logs[0].name
    if signal_after is not None:
      time.sleep(signal_after)
      procs[1].send_signal(signal.SIGTERM)
    for p in procs:
      p.communicate(timeout=900)
      assert p.returncode == 0, f"worker failed; see {logs[0].name}"
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
    for f in logs:
      f.close()
  return [json.load(open(r)) for r in reports]


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--steps", type=int, default=60)
  parser.add_argument("--size", type=int, default=512)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--trials", type=int, default=3)
  parser.add_argument("--host_ms", type=float, default=20.0,
                      help="host work per step (sleep), before the step is dispatched")
  args = parser.parse_args()
  import tempfile
  tmp = tempfile.mkdtemp()
  print(f"{args.steps} steps, 2 processes x 4 CPU devices, size {args.size}, host work "
        f"{args.host_ms:g} ms/step; ms per step (ms of it the host spent in the stop check):")
  timing = {}
  for mode in ("none", "agreed", "blocking") * args.repeats:  # interleaved against drift
    r = run(mode, args.steps, args.size, args.host_ms, None, tmp)
    timing.setdefault(mode, []).append((max(x["ms_per_step"] for x in r),
                                        max(x["ms_in_check"] for x in r)))
  for mode, values in timing.items():
    values = sorted(values)
    runs = ", ".join(f"{v:.1f} ({w:.1f})" for v, w in values)
    median = values[len(values) // 2]
    print(f"  {mode:9s} median {median[0]:6.1f} ({median[1]:.1f})   runs: {runs}")
  print("SIGTERM to process 1 during an `agreed` run: first step carrying its flag -> stop step")
  rng = random.Random(0)
  for _ in range(args.trials):
    r = run("agreed", 10 ** 6, args.size, args.host_ms, rng.uniform(1.0, 4.0), tmp)
    p0, p1 = sorted(r, key=lambda x: x["pid"])
    print(f"  flag first carried by step {p1['signalled_at']}: process 0 stopped after step "
          f"{p0['stopped_at']}, process 1 after step {p1['stopped_at']} "
          f"({p1['stopped_at'] - p1['signalled_at']} step(s) later)")


if __name__ == "__main__":
  main()
