"""`python -m llama_jax.plan`: will a recipe fit? Per-device memory and FLOPs of its train step.

  python -m llama_jax.plan --config=configs/yarn_13b.py --devices=64 --config.mesh.fsdp=64 \
      --hbm_gib=80

The step is compiled ahead of time for a mesh of simulated CPU devices (nothing is allocated);
what is reported and how to read it is in `llama_jax.perf.planning`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

from llama_jax.perf.planning import format_report, plan
from llama_jax.training import recipes

FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a program, so that importing this module
  (tests, other tools with their own --config) leaves the global flag namespace alone."""
  config_flags.DEFINE_config_file(
      "config", None, "A configs/*.py recipe; override fields with --config.<field>=<value>.",
      lock_config=True)
  flags.DEFINE_integer(
      "devices", None, "Devices of the target topology (simulated as CPU devices); default: the "
      "recipe's DEVICES.")
  flags.DEFINE_float("hbm_gib", 0.0, "Memory per device in GiB, to say whether it fits.")
  flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device, for a time "
      "estimate (e.g. 989 for H100 bf16).")
  flags.DEFINE_float("mfu", 0.4, "Assumed MFU for the time estimate.")
  flags.DEFINE_string("out", "", "Also write the report as JSON to this file.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  if FLAGS.config is None:
    raise app.UsageError("--config=configs/<recipe>.py is required")
  config_path = config_flags.get_config_filename(flags.FLAGS["config"])
  n = FLAGS.devices
  if n is None:
    n = int(getattr(recipes.module(config_path), "DEVICES", 1))
  if n < 1:
    raise app.UsageError(f"--devices={n} must be >= 1")
  import jax
  # Before JAX starts its backend: a CPU-only process with n simulated devices.
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", n)
  report = plan(FLAGS.config, n, FLAGS.hbm_gib, FLAGS.peak_tflops, FLAGS.mfu)
  report["config"] = Path(config_path).name
  report["command"] = " ".join(sys.argv)
  print(format_report(report["config"], report), flush=True)
  if FLAGS.out:
    Path(FLAGS.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
  define_flags()
  sys.argv = recipes.resolve_argv(sys.argv)
  app.run(main)
