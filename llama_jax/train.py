"""`python -m llama_jax.train --config=configs/<recipe>.py [--workdir=DIR] [--config.a.b=v ...]`.

Trains (or resumes) a recipe: the loop is `llama_jax.training.loop.run`, whose docstring tells
the whole story. This module holds the command line: flags, the multi-process start-up
(`training.distributed`) before any JAX computation, and the exit status (`core.cli` runs
`PROGRAM`: one-line errors, --help, logging). Rerunning the same command resumes from the
workdir's latest checkpoint; a run stopped by SIGTERM/SIGINT after saving exits with
`cli.PREEMPTED` (75), so a scheduler can requeue it.
"""
from __future__ import annotations

import os
from pathlib import Path

# Only the configuration, flags and distributed set-up may run before jax.distributed is up;
# everything that touches devices is imported lazily by the loop.
from llama_jax.core import cli
from llama_jax.training import recipes
from llama_jax.training import validation as config_lib
from llama_jax.training.distributed import initialize_distributed
from llama_jax.training.loop import run

_DEFAULT_CONFIG = recipes.path("tiny")

USAGE = """\
python -m llama_jax.train [--config=configs/RECIPE.py|RECIPE] [--workdir=DIR]
                          [--config.FIELD=VALUE ...]

Trains a recipe (default: configs/tiny.py, a small LLaMA on this machine's Python standard
library), or resumes it: rerunning the same command continues from the workdir's latest
checkpoint. Progress, held-out evaluations and checkpoints go to the workdir.

  python -m llama_jax.train --config=configs/tiny.py --workdir=/tmp/llama_tiny
  python -m llama_jax.train --config=configs/yarn_7b.py --config.optim.peak_lr=1e-5 \\
      --config.mesh.fsdp=16
  python -m llama_jax.train --config=configs/tiny.py --config.steps=2000   # continue a run
  python -m llama_jax.train --config=yarn_13b ...   # a recipe by name, from any directory
  python -m llama_jax.train --config=configs/dcis_7b.py --rope_json=runs/dcis/rope.json

Every config field and its default is in llama_jax/training/defaults.py; the whole config is
checked before any device work. On several hosts, run the same command on each (see
configs/launch/README.md). SIGTERM or Ctrl-C saves a checkpoint and exits with status 75."""


def define_flags(flag_values=None) -> None:
  """The CLI's flags on `flag_values` (default: absl's global flags)."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FLAGS if flag_values is None else flag_values
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Training recipe (a configs/*.py file, or a recipe name).",
      flag_values=fv, lock_config=True)
  flags.DEFINE_string(
      "rope_json", None, "RoPE fields as JSON (a file such as a search's rope.json, or a JSON "
      "string) applied to config.model.rope after the --config overrides.", flag_values=fv)
  flags.DEFINE_string(
      "workdir", None, "Checkpoints, logs and config.json go here; rerunning with the same "
      "workdir resumes. Default: runs/<config file name>.", flag_values=fv)
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 for multi-process runs.",
      flag_values=fv)
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes).",
                       lower_bound=0, flag_values=fv)
  flags.DEFINE_list(
      "local_device_ids", None, "Accelerators this process drives, e.g. 0,1,2,3,4,5,6,7 for one "
      "process per 8-GPU node under SLURM (JAX's SLURM default is one GPU per process: the "
      "GPU numbered SLURM_LOCALID).", flag_values=fv)
  flags.DEFINE_enum(
      "distributed", "auto", ["auto", "on", "off"],
      "auto: initialize jax.distributed when the flags above are given, on TPU VMs, or in a "
      "multi-task SLURM/Open MPI job; on: always (JAX detects the cluster); off: never.",
      flag_values=fv)


def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/tiny for configs/tiny.py."""
  return os.path.join("runs", Path(config_path.split(":")[0]).stem or "run")


def main(argv, flag_values=None):
  from absl import flags
  from ml_collections import config_flags

  from llama_jax.core import files
  from llama_jax.core.errors import ConfigError, UsageError
  if len(argv) > 1:
    raise UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value")
  f = flags.FLAGS if flag_values is None else flag_values
  config = f.config
  workdir = f.workdir or default_workdir(config_flags.get_config_filename(f["config"]))
  if f.rope_json:
    from llama_jax.rope.config import read_json
    from llama_jax.training import defaults
    try:
      defaults.set_rope(config, read_json(f.rope_json))
    except ValueError as e:
      raise ConfigError(str(e)) from None
  # Everything that needs no device is checked before jax.distributed connects to anyone.
  model_cfg = config_lib.validate(config).model
  files.check_output_directory(workdir, "--workdir")
  initialize_distributed(f.distributed, f.coordinator_address, f.num_processes, f.process_id,
                         f.local_device_ids)
  extra = []
  if config.export_every:  # HF exports are interop's: the program adds them to the loop
    from llama_jax.interop import export
    extra.append(export.hook(workdir, config.export_every, model_cfg))
  result = run(config, workdir, hooks=extra)
  return cli.PREEMPTED if result.stopped_early else cli.OK


PROGRAM = cli.Program("train", USAGE, define_flags, main, prepare_argv=recipes.resolve_argv)

if __name__ == "__main__":
  cli.run(PROGRAM)
