"""`python -m llama_jax.bench`: train-step speed, MFU and memory against HF transformers + torch.

What is measured and how is in `llama_jax.perf.benchmark`. This module is the command line only
(`core.cli` runs `PROGRAM`); its flags are checked before the process restarts itself with
tcmalloc (`perf.malloc`) or compiles anything.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from llama_jax.core import cli
from llama_jax.perf import malloc
from llama_jax.perf.benchmark import DEFAULT_CPU_FLAGS, HF, HF_SYSTEM, STEP_COMPILE, run
from llama_jax.training import recipes

MODES = ("train", "eval", "generate")

USAGE = """\
python -m llama_jax.bench --config=configs/bench_34m.py --out=DIR [options]

Measures llama_jax against HF transformers + torch on the same model and inputs, the two sides
interleaved so machine load hits both alike. --mode=train (default): train-step time, tokens/s,
TFLOP/s, MFU, compile time and peak memory of llama_jax's attention kernels over a sweep of
sequence lengths (bench.json, bench.md, bench.png); --mode=eval: sliding-window perplexity
scoring (eval.*); --mode=generate: greedy prefill + decode (generate.*). All go to --out.

  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench
  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench \\
      --seq_lens=4096,8192 --impls=xla,chunked --time=false   # compile and memory only
  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench --mode=eval \\
      --seq_lens=256,512,1024,2048   # sliding-window perplexity scoring
  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench --mode=generate \\
      --gen_batches=1,8   # greedy decoding: a 512-token prompt, 128 new tokens"""


def define_flags(flag_values=None):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file(
      "config", None, "A configs/*.py recipe; its model, optim, batch_size and seq_len are used.",
      flag_values=fv, lock_config=True)
  flags.DEFINE_string("out", None, "Directory for bench.json, bench.md and bench.png.",
                      flag_values=fv)
  flags.DEFINE_list("seq_lens", None, "Sequence lengths (default: the config's).",
                    flag_values=fv)
  flags.DEFINE_list("impls", ["xla", "xla_blocked", "chunked", HF],
                    f"Attention kernels of llama_jax, and/or {HF} (the baseline).",
                    flag_values=fv)
  flags.DEFINE_enum("batch_mode", "tokens", ["tokens", "fixed"],
                    "tokens: keep batch_size*seq_len tokens per step; fixed: keep batch_size "
                    "rows.", flag_values=fv)
  flags.DEFINE_integer("steps", 5, "Timed steps per implementation and length.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_bool("time", True, "Run and time steps (false: compile and memory only).",
                    flag_values=fv)
  flags.DEFINE_integer("torch_threads", 0, "Torch threads (0 = usable cores).", lower_bound=0,
                       flag_values=fv)
  flags.DEFINE_string("xla_cpu_flags", DEFAULT_CPU_FLAGS,
                      "XLA flags appended to XLA_FLAGS for the CPU backend.", flag_values=fv)
  flags.DEFINE_enum("step_compile", "backend", list(STEP_COMPILE),
                    "backend: compile the JAX steps as training does (core.compilation); "
                    "xla_defaults: XLA's "
                    "default options and one logits matmul.", flag_values=fv)
  flags.DEFINE_enum("malloc", "auto", list(malloc.CHOICES),
                    "auto: restart with tcmalloc preloaded when it is installed (see "
                    "llama_jax/perf/malloc.py); tcmalloc: require it; system: glibc malloc.",
                    flag_values=fv)
  flags.DEFINE_enum("mode", "train", list(MODES),
                    "train: train steps (bench.json); eval: sliding-window perplexity scoring "
                    "(eval.json); generate: greedy prefill + decode (generate.json); all "
                    "against HF transformers + torch (llama_jax/perf/infer_bench.py).",
                    flag_values=fv)
  flags.DEFINE_list("gen_batches", ["1", "8"], "--mode=generate: batch sizes.", flag_values=fv)
  flags.DEFINE_integer("gen_prompt", 512, "--mode=generate: prompt tokens.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_integer("gen_new", 128, "--mode=generate: new tokens.", lower_bound=2,
                       flag_values=fv)
  flags.mark_flags_as_required(["config", "out"], flag_values=fv)


def main(argv, flag_values=None):
  from absl import flags
  from ml_collections import config_flags

  from llama_jax import attention as attention_lib
  from llama_jax.core import files
  from llama_jax.core.errors import UsageError

  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  config = f.config
  # The flags are checked before the restart under tcmalloc; the recipe by `run` (after
  # XLA_FLAGS is set: JAX reads it once, when its backend starts).
  try:
    seq_lens = [int(s) for s in (f.seq_lens or [config.seq_len])]
  except ValueError:
    raise UsageError(f"--seq_lens={','.join(f.seq_lens)}: give positive integers, e.g. "
                     "--seq_lens=512,1024") from None
  if any(t < 1 for t in seq_lens):
    raise UsageError(f"--seq_lens={seq_lens} must be positive integers")
  unknown = [i for i in f.impls if i not in (HF, HF_SYSTEM) and i not in attention_lib.names()]
  if unknown or not f.impls:
    raise UsageError(f"--impls={','.join(f.impls)}: {unknown or 'none given'}; allowed: "
                     f"{attention_lib.names() + [HF, HF_SYSTEM]}")
  files.check_output_directory(f.out, "--out")
  malloc.ensure(f.malloc, "llama_jax.bench", sys.argv)
  if f.xla_cpu_flags:
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + f.xla_cpu_flags).strip()
  name = Path(config_flags.get_config_filename(f["config"])).name
  command = " ".join(["python -m llama_jax.bench", *sys.argv[1:]])
  if f.mode != "train":
    return _run_inference(f, config, seq_lens, name, command)
  run(config, f.out, seq_lens, f.impls, f.batch_mode, f.steps, f.warmup, f.time,
      f.torch_threads, command=command, name=name, step_compile=f.step_compile)


def _run_inference(f, config, seq_lens, name, command):
  from llama_jax.core.errors import UsageError
  from llama_jax.perf import infer_bench
  if f.mode == "eval":
    infer_bench.run_eval(config, f.out, seq_lens, f.steps, f.warmup,
                         torch_threads=f.torch_threads, command=command, name=name)
    return
  try:
    batches = [int(b) for b in f.gen_batches]
  except ValueError:
    batches = []
  if not batches or min(batches) < 1:
    raise UsageError(f"--gen_batches={','.join(f.gen_batches)}: give positive integers, e.g. 1,8")
  infer_bench.run_generate(config, f.out, batches, f.gen_prompt, f.gen_new, f.steps, f.warmup,
                           torch_threads=f.torch_threads, command=command, name=name)


PROGRAM = cli.Program("bench", USAGE, define_flags, main, prepare_argv=recipes.resolve_argv)

if __name__ == "__main__":
  cli.run(PROGRAM)
