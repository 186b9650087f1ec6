"""`python -m llama_jax.plan`: will a recipe fit? Per-device memory and FLOPs of its train step.

The step is compiled ahead of time for a mesh of simulated CPU devices (nothing is allocated);
what is reported and how to read it is in `llama_jax.perf.planning`. This module is the command
line only (`core.cli` runs `PROGRAM`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from llama_jax.core import cli
from llama_jax.training import recipes

USAGE = """\
python -m llama_jax.plan --config=configs/RECIPE.py [--devices=N] [--config.<field>=<value> ...]

Compiles a recipe's train step ahead of time for N simulated devices (nothing is allocated) and
reports per-device memory (parameters, optimizer state, activations, peak) and FLOPs per step,
so a recipe can be checked before launch.

  python -m llama_jax.plan --config=configs/yarn_13b.py --devices=64 --config.mesh.fsdp=64
  python -m llama_jax.plan --config=configs/yarn_13b.py --devices=64 --config.mesh.fsdp=32 \\
      --config.mesh.sequence=2 --hbm_gib=80 --peak_tflops=989
  python -m llama_jax.plan --config=configs/yarn_7b.py --devices=64 --config.mesh.fsdp=64 --dry_run

A recipe's grad_accum is sized for its own device count; when the mesh asked for cannot split
its micro-batch, plan uses the nearest grad_accum that fits (same global batch) and says so.
--dry_run checks the recipe and the mesh and prints the layout without compiling."""


def define_flags(flag_values=None):
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file(
      "config", None, "A configs/*.py recipe.", flag_values=fv, lock_config=True)
  flags.DEFINE_integer("devices", None, "Devices of the target topology (simulated as CPU "
                       "devices); default: the recipe's DEVICES.", lower_bound=1,
                       flag_values=fv)
  flags.DEFINE_float("hbm_gib", 0.0, "Memory per device in GiB, to say whether it fits.",
                     lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("peak_tflops", 0.0, "Peak TFLOP/s per device, for a time estimate (e.g. "
                     "989 for H100 bf16).", lower_bound=0.0, flag_values=fv)
  flags.DEFINE_float("mfu", 0.4, "Assumed MFU for the time estimate, in (0, 1].",
                     flag_values=fv)
  flags.DEFINE_string("out", "", "Also write the report as JSON to this file.", flag_values=fv)
  flags.DEFINE_bool("dry_run", False, "Check the recipe and the mesh and print the layout; "
                    "compile nothing.", flag_values=fv)
  flags.mark_flags_as_required(["config"], flag_values=fv)
  flags.register_validator("mfu", lambda v: 0.0 < v <= 1.0, "--mfu must be in (0, 1]",
                           flag_values=fv)


def _simulate_devices(n: int) -> None:
  """A CPU-only JAX with n devices, set before JAX starts its backend. When it has started
  already (plan called in-process after other JAX work), planning checks the count."""
  import jax
  try:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", n)
  except RuntimeError:
    pass


def main(argv, flag_values=None):
  from absl import flags
  from ml_collections import config_flags

  from llama_jax.core import files
  from llama_jax.core.errors import UsageError
  from llama_jax.perf.planning import fit_grad_accum, format_report, plan
  from llama_jax.training import validation

  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}")
  f = flags.FLAGS if flag_values is None else flag_values
  config, config_path = f.config, config_flags.get_config_filename(f["config"])
  name = Path(config_path.split(":")[0]).name
  n = f.devices or int(getattr(recipes.module(config_path), "DEVICES", 1))
  if f.out:
    files.check_output_file(f.out, "--out")
  explicit = "config.grad_accum" in f and f["config.grad_accum"].present
  note = None if explicit else fit_grad_accum(config, n)
  if f.dry_run:
    checked = validation.validate(config, n_devices=n, check_paths=False)
    mesh = " x ".join(f"{k}={v}" for k, v in checked.mesh_shape.items() if v > 1) or "1 device"
    data = checked.mesh_shape["data"] * checked.mesh_shape["fsdp"]
    print(f"plan (dry run, nothing compiled): {name} on {n} devices ({mesh})")
    print(f"  batch     {config.batch_size} x {config.seq_len} tokens, grad_accum "
          f"{config.grad_accum} ({config.batch_size // config.grad_accum / data:g} sequences "
          "per device per micro-batch)")
    if note:
      print(f"  note      {note}")
    print(f"  model     {checked.model.num_params() / 1e9:.2f}B params; the recipe and mesh are "
          "valid (run without --dry_run for memory and FLOPs)")
    return
  _simulate_devices(n)
  report = plan(config, n, f.hbm_gib, f.peak_tflops, f.mfu)
  report["config"] = name
  report["command"] = " ".join(sys.argv)
  if note:
    report["note"] = note
  print(format_report(name, report), flush=True)
  if f.out:
    files.write_json(f.out, report)


PROGRAM = cli.Program("plan", USAGE, define_flags, main, prepare_argv=recipes.resolve_argv)

if __name__ == "__main__":
  cli.run(PROGRAM)
