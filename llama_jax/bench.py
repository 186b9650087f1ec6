"""`python -m llama_jax.bench`: train-step speed, MFU and memory against HF transformers + torch.

  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench \
      [--seq_lens=256,512,1024,2048] [--impls=xla,xla_blocked,chunked,hf_torch]

What is measured and how is in `llama_jax.perf.benchmark`.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from llama_jax.perf import malloc
from llama_jax.perf.benchmark import DEFAULT_CPU_FLAGS, STEP_COMPILE, run
from llama_jax.training import recipes

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a program, so that importing this module
  (tests, other tools with their own --config) leaves the global flag namespace alone."""
  config_flags.DEFINE_config_file(
      "config", None, "A configs/*.py recipe; its model, optim, batch_size and seq_len are used.",
      lock_config=True)
  flags.DEFINE_string("out", None, "Directory for bench.json, bench.md and bench.png.")
  flags.DEFINE_list("seq_lens", None, "Sequence lengths (default: the config's).")
  flags.DEFINE_list("impls", ["xla", "xla_blocked", "chunked", "hf_torch"],
      "Attention kernels of llama_jax, and/or hf_torch (the baseline).")
  flags.DEFINE_enum("batch_mode", "tokens", ["tokens", "fixed"],
      "tokens: keep batch_size*seq_len tokens per step; fixed: keep "
      "batch_size rows.")
  flags.DEFINE_integer("steps", 5, "Timed steps per implementation and length.")
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  flags.DEFINE_bool("time", True, "Run and time steps (false: compile and memory only).")
  flags.DEFINE_integer("torch_threads", 0, "Torch threads (0 = usable cores).")
  flags.DEFINE_string("xla_cpu_flags", DEFAULT_CPU_FLAGS,
      "XLA flags appended to XLA_FLAGS for the CPU backend.")
  flags.DEFINE_enum("step_compile", "backend", list(STEP_COMPILE),
      "backend: compile the JAX steps as training does (core.compilation.for_backend); "
      "xla_defaults: XLA's default options and one logits matmul.")
  flags.DEFINE_enum("malloc", "auto", list(malloc.CHOICES),
      "auto: restart with tcmalloc preloaded when it is installed (the JAX steps and the "
      "HF/torch child then share it; see llama_jax/perf/malloc.py); tcmalloc: require it; system: "
      "glibc malloc.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if FLAGS.config is None or not FLAGS.out:
    raise app.UsageError("--config=configs/<recipe>.py and --out=DIR are required")
  malloc.ensure(FLAGS.malloc, "llama_jax.bench", sys.argv)
  if FLAGS.xla_cpu_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + FLAGS.xla_cpu_flags).strip()
  config = FLAGS.config
  name = Path(config_flags.get_config_filename(flags.FLAGS["config"])).name
  seq_lens = [int(s) for s in (FLAGS.seq_lens or [config.seq_len])]
  run(config, FLAGS.out, seq_lens, FLAGS.impls, FLAGS.batch_mode, FLAGS.steps,
      FLAGS.warmup, FLAGS.time, FLAGS.torch_threads,
      command=" ".join(["python -m llama_jax.bench", *sys.argv[1:]]), name=name,
      step_compile=FLAGS.step_compile)


if __name__ == "__main__":
  define_flags()
  sys.argv = recipes.resolve_argv(sys.argv)
  app.run(main)
