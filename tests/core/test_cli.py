"""The shared command-line runner (core/cli.py) and log filtering (core/logs.py), on toy
programs."""
import asyncio
import errno
import logging
import sys
import types

import pytest

from llama_jax.core import cli, logs
from llama_jax.core.errors import CheckpointError, ConfigError, DataError, UsageError


def program(action, define=None):
  def define_flags(fv):
    from absl import flags
    flags.DEFINE_integer("n", 1, "A number.", lower_bound=0, flag_values=fv)
    if define:
      define(fv)

  def main(argv, fv):
    return action(fv)

  return cli.Program("toy", "python -m llama_jax.toy [--n=N]\n\nA toy.", define_flags, main)


def run(prog, *args, capsys):
  status = cli.main(prog, ["toy", *args])
  out = capsys.readouterr()
  return status, out.out, out.err


@pytest.mark.parametrize("error,status,message", [
    (UsageError("--n=3 is too many"), cli.USAGE, "toy: error: --n=3 is too many"),
    (ConfigError("optim.peak_lr=-1 must be > 0"), cli.USAGE, "toy: error: optim.peak_lr"),
    (DataError("x.txt is not UTF-8"), cli.FAILURE, "toy: error: x.txt is not UTF-8"),
    (CheckpointError("step 5 unreadable"), cli.FAILURE, "toy: error: step 5 unreadable"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/run"), cli.FAILURE,
     "toy: error: Read-only file system: /ro/run (the file system is read-only"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x"), cli.FAILURE,
     "toy: error: No such file or directory: /x"),
    (FloatingPointError("the training loss is nan"), cli.FAILURE, "toy: error: the training"),
])
def test_user_errors_end_with_one_line_and_their_exit_status(error, status, message, capsys):
  def fail(fv):
    raise error
  got, out, err = run(program(fail), capsys=capsys)
  assert got == status
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), err
  assert "Traceback" not in err


def test_multi_line_messages_become_one_line(capsys):
  def fail(fv):
    raise DataError("first\nsecond\n\n  third")
  _, _, err = run(program(fail), capsys=capsys)
  assert err.strip() == "toy: error: first second third"


def test_a_bug_keeps_its_traceback(capsys):
  def fail(fv):
    raise RuntimeError("an internal invariant broke")
  status, _, err = run(program(fail), capsys=capsys)
  assert status == cli.FAILURE
  assert "Traceback" in err and "RuntimeError: an internal invariant broke" in err
  assert err.strip().splitlines()[-1].startswith("toy: internal error (RuntimeError)")


def test_verbose_shows_the_traceback_of_a_user_error(capsys):
  def fail(fv):
    raise DataError("bad data")
  try:
    status, _, err = run(program(fail), "--verbose", capsys=capsys)
  finally:
    logs.configure(verbose=False)
  assert status == cli.FAILURE and "Traceback" in err
  assert err.strip().splitlines()[-1] == "toy: error: bad data"


def test_status_interrupt_and_flags(capsys):
  assert run(program(lambda fv: None), capsys=capsys)[0] == cli.OK
  assert run(program(lambda fv: cli.PREEMPTED), capsys=capsys)[0] == 75

  def interrupted(fv):
    raise KeyboardInterrupt
  status, _, err = run(program(interrupted), capsys=capsys)
  assert status == cli.INTERRUPTED and err.strip() == "toy: interrupted"
  seen = []
  assert run(program(lambda fv: seen.append(fv.n)), "--n=7", capsys=capsys)[0] == 0
  assert seen == [7]
  status, _, err = run(program(lambda fv: None), "--n=-1", capsys=capsys)
  assert status == cli.USAGE and err.startswith("toy: error: flag --n=-1: -1 is not")
  status, _, err = run(program(lambda fv: None), "--nn=1", capsys=capsys)
  assert status == cli.USAGE and "unknown flag --nn; did you mean --n?" in err


def test_help_exits_0_before_anything_runs(capsys):
  ran = []
  for flag in ("--help", "-h", "--helpfull"):
    status, out, err = run(program(lambda fv: ran.append(1)), flag, capsys=capsys)
    assert status == 0 and err == "" and not ran
    assert out.startswith("python -m llama_jax.toy [--n=N]\n\nA toy.\n\noptions:\n  --n=N\n")
    assert "A number. (default: 1)" in out and "--verbose" in out


def test_required_flags_and_config_files(tmp_path, capsys):
  from absl import flags
  from ml_collections import config_flags

  def define(fv):
    flags.DEFINE_string("src", None, "Source.", flag_values=fv)
    flags.mark_flag_as_required("src", flag_values=fv)
    config_flags.DEFINE_config_file("config", None, "A recipe.", flag_values=fv)

  recipe = tmp_path / "r.py"
  recipe.write_text("import ml_collections\n"
                    "def get_config():\n  return ml_collections.ConfigDict({'steps': 3})\n")
  seen = {}
  prog = program(lambda fv: seen.update(steps=fv.config.steps), define)
  status, _, err = run(prog, f"--config={recipe}", capsys=capsys)
  assert status == cli.USAGE and err.strip() == "toy: error: --src is required (see --help)"
  status, _, err = run(prog, "--src=a", f"--config={tmp_path}/none.py", capsys=capsys)
  assert status == cli.USAGE and "none.py: no such recipe file" in err
  status, _, err = run(prog, "--src=a", f"--config={recipe}", "--config.stepz=4",
                       capsys=capsys)
  assert status == cli.USAGE and "an override names no config key" in err and "steps" in err
  status, _, err = run(prog, "--src=a", f"--config={recipe}", "--config.steps=9", capsys=capsys)
  assert status == 0 and seen == {"steps": 9}
  (tmp_path / "bad.py").write_text("def get_config(:\n")
  status, _, err = run(prog, "--src=a", f"--config={tmp_path / 'bad.py'}", capsys=capsys)
  assert status == cli.USAGE and "could not be loaded as a recipe: SyntaxError" in err


# ------------------------------------------------------------------------------ logs
def test_logs_keep_ours_and_third_party_warnings_but_drop_spurious_ones(capsys):
  logs.configure(verbose=False)
  logging.getLogger("llama_jax.data").info("preparing the corpus")
  logging.getLogger("orbax.checkpoint").info("[process=0] Finished load in 0.08 seconds")
  logging.getLogger("absl").warning("Given directory is read only=/run/checkpoints")
  logging.getLogger("orbax.checkpoint").warning("a real problem")
  logging.getLogger("jax").info("Unable to initialize backend 'tpu'")
  import warnings
  warnings.warn("3 files that are not UTF-8 are left out", UserWarning, stacklevel=1)
  err = capsys.readouterr().err.splitlines()
  assert err == ["preparing the corpus", "warning: a real problem",
                 "warning: UserWarning: 3 files that are not UTF-8 are left out"]


def _closed_loop_error():
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(lambda: None)
  except RuntimeError as e:
    return e


def test_event_loop_closed_reports_are_dropped_others_kept(monkeypatch):
  reported = []
  monkeypatch.setattr(sys, "unraisablehook", reported.append)  # stands for Python's default
  logs.silence_closed_event_loop_errors()
  logs.silence_closed_event_loop_errors()  # idempotent: one filter, not a chain
  error = _closed_loop_error()
  assert str(error) == "Event loop is closed"
  # What each TensorStore read that finishes after a failed orbax restore reports:
  sys.unraisablehook(types.SimpleNamespace(exc_type=RuntimeError, exc_value=error,
                                           exc_traceback=error.__traceback__, err_msg=None,
                                           object=None))
  assert reported == []
  other = types.SimpleNamespace(exc_type=RuntimeError, exc_value=RuntimeError("else"),
                                exc_traceback=None, err_msg=None, object=None)
  sys.unraisablehook(other)
  assert reported == [other]
