"""`python -m llama_jax.train --config=configs/<recipe>.py [--workdir=DIR] [--config.a.b=v ...]`.

Trains (or resumes) a recipe: the loop is `llama_jax.training.loop.run`, whose docstring tells
the whole story. This module holds the command line: flags, the multi-process start-up
(`training.distributed`) before any JAX computation, and one-line errors for user mistakes.
Rerunning the same command resumes from the workdir's latest checkpoint.
"""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import config_flags

# Only the configuration, flags and distributed set-up may run before jax.distributed is up;
# everything that touches devices is imported lazily by the loop.
from llama_jax.core.errors import ConfigError, LlamaJaxError
from llama_jax.training import recipes, validation as config_lib
from llama_jax.training.distributed import initialize_distributed
from llama_jax.training.loop import run  # noqa: F401  (the Python API: run(config, workdir))

_DEFAULT_CONFIG = recipes.path("tiny")
FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a program: modules that import this one (tests,
  other tools with their own --config) keep a clean global flag namespace."""
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Training recipe (a configs/*.py file); override fields with "
      "--config.<field>=<value>, e.g. --config.optim.peak_lr=2e-5.", lock_config=True)
  flags.DEFINE_string(
      "rope_json", None, "RoPE fields as JSON (a file such as a search's rope.json, or a JSON "
      "string) applied to config.model.rope after the --config overrides.")
  flags.DEFINE_string(
      "workdir", None, "Checkpoints, logs and config.json go here; rerunning with the same "
      "workdir resumes. Default: runs/<config file name>.")
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num).")
  flags.DEFINE_list(
      "local_device_ids", None, "Accelerators this process drives, e.g. 0,1,2,3,4,5,6,7 for one "
      "process per 8-GPU node under SLURM (JAX's SLURM default is one GPU per process: the "
      "GPU numbered SLURM_LOCALID).")
  flags.DEFINE_enum(
      "distributed", "auto", ["auto", "on", "off"],
      "auto: initialize jax.distributed when the flags above are given, on TPU VMs, or in a "
      "multi-task SLURM/Open MPI job; on: always (JAX detects the cluster); off: never.")


# ------------------------------------------------------------------------------ CLI
def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/tiny for configs/tiny.py."""
  return os.path.join("runs", Path(config_path.split(":")[0]).stem or "run")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax", "orbax", "tensorboardX"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  config = FLAGS.config
  workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
  try:
    if FLAGS.rope_json:
      from llama_jax.rope.config import read_json
      from llama_jax.training import defaults
      try:
        defaults.set_rope(config, read_json(FLAGS.rope_json))
      except ValueError as e:
        raise ConfigError(str(e)) from None
    # Everything that needs no device is checked before jax.distributed connects to anyone.
    config_lib.validate(config)
    initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.local_device_ids)
    extra = []
    if config.export_every:  # HF exports are interop's: the program adds them to the loop
      from llama_jax.interop import export
      model_cfg = config_lib.validate(config, check_paths=False).model
      extra.append(export.hook(workdir, config.export_every, model_cfg))
    run(config, workdir, hooks=extra)
  except LlamaJaxError as e:
    # A mistake in the config or the inputs: the message says what to change; no traceback.
    sys.exit(f"error: {type(e).__name__}: {e}")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a one-line error for a `--config.x.y=v` override naming no config key.

  config_flags applies overrides while parsing, so a misspelt key surfaces here as the
  config's AttributeError/KeyError (with a "did you mean"), before `main` could catch it.
  """
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}. Pass --helpfull to list the flags.")
  except (AttributeError, KeyError) as e:
    detail = e
    while isinstance(detail, (AttributeError, KeyError)) and detail.args and isinstance(
        detail.args[0], BaseException):
      detail = detail.args[0]
    text = " ".join(str(detail.args[0] if detail.args else detail).split())
    overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"error: ConfigError: an override names no config key ({text.strip()}); "
             f"overrides given: {overrides}. Every key and its default is in llama_jax/training/defaults.py.")


if __name__ == "__main__":
  define_flags()
  sys.argv = recipes.resolve_argv(sys.argv)
  app.run(main, flags_parser=parse_flags)
