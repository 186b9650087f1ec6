"""The runner every command-line tool shares: flags, --help, one-line errors, exit status, logs.

A tool is a `Program` — its name, its user-facing usage text, a function defining its flags on
a `FlagValues` and its `main(argv, flags)` — and its module ends with

  if __name__ == "__main__":
    cli.run(PROGRAM)

`main(program, argv)` does the rest, the same way for every tool:

- `--help` (also -h, --helpfull) prints the usage text and the tool's own flags, exit 0.
- Flags are parsed into a fresh `FlagValues` (so tests can run many commands in one process);
  a `--config=FILE` flag (`config_flags`) and its `--config.<field>=<value>` overrides are
  checked here: a missing recipe file, an override naming no key, a value of the wrong type.
- Errors a user can fix end with ONE line on stderr, `<tool>: error: <what, which value, what
  is allowed or what to run>`, and no traceback (`--verbose` adds it). Anything else is a bug
  and keeps its traceback.
- Logging goes through `core.logs`: llama_jax at INFO, third-party libraries at WARNING minus
  known-spurious lines (`--verbose`: everything).

Exit status (what a script or a scheduler can rely on):

  0   done
  1   FAILURE: the command is well-formed but something it needs failed — a file, checkpoint,
      tokenizer or dataset that is missing or unreadable, a disk that is full or read-only,
      a training run that diverged (DataError, CheckpointError, OSError, FloatingPointError)
  2   USAGE: the command as written cannot work — an unknown flag, a malformed or out-of-range
      value, a config field or combination that is not allowed (UsageError, ConfigError)
  75  PREEMPTED: a signal (SIGTERM, Ctrl-C) stopped training after a checkpoint was saved;
      rerunning the same command resumes. 75 is EX_TEMPFAIL of sysexits.h ("try again later"),
      so a scheduler can requeue on it (configs/launch/slurm_gpu.sbatch does).
  130 INTERRUPTED: stopped at once (a second Ctrl-C) without a final checkpoint
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import errno
import os
import re
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator, Sequence

from llama_jax.core import logs
from llama_jax.core.errors import ConfigError, LlamaJaxError, UsageError

OK, FAILURE, USAGE, PREEMPTED, INTERRUPTED = 0, 1, 2, 75, 130
HELP_FLAGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")


@dataclasses.dataclass(frozen=True)
class Program:
  """One command-line tool: `python -m llama_jax.<name>`."""
  name: str
  usage: str  # what the tool does and example commands, as the user reads them in --help
  define_flags: Callable  # (FlagValues) -> None
  main: Callable  # (argv: list[str], FlagValues) -> exit status or None (= 0)
  # argv -> argv before parsing, e.g. a bare recipe name in --config=NAME made a path; may
  # raise UsageError.
  prepare_argv: Callable | None = None

  @property
  def command(self) -> str:
    return f"python -m llama_jax.{self.name}"


# ------------------------------------------------------------------------------ errors
def exit_status(error: BaseException) -> int | None:
  """The exit status for an error a user can act on; None for a bug (keeps its traceback)."""
  if isinstance(error, (UsageError, ConfigError)):
    return USAGE
  if isinstance(error, (LlamaJaxError, OSError, FloatingPointError)):
    return FAILURE
  return None


def one_line(text: str) -> str:
  """A message on one line: an embedded traceback is cut to its last line, whitespace runs
  (newlines included) become single spaces."""
  if "Traceback (most recent call last)" in text:
    head = text.split("Traceback (most recent call last)")[0]
    last = [line for line in text.splitlines() if line.strip()][-1]
    text = f"{head} {last}"
  return " ".join(text.split())


def describe(error: BaseException) -> str:
  """The one-line message for `error` (OS errors as "what: path")."""
  if isinstance(error, OSError) and not isinstance(error, LlamaJaxError) and error.strerror:
    paths = " -> ".join(str(p) for p in (error.filename, error.filename2) if p is not None)
    hint = {errno.EROFS: " (the file system is read-only; choose a writable location)",
            errno.ENOSPC: " (the disk is full; free space or choose another location)",
            errno.EACCES: " (no permission; choose a location you can write to)",
            errno.ENOTDIR: " (a part of the path is a file, not a directory)"}.get(
                error.errno, "")
    return one_line(f"{error.strerror}: {paths}{hint}" if paths else f"{error.strerror}{hint}")
  text = str(error) or type(error).__name__
  if isinstance(error, KeyError) and error.args:  # str(KeyError) adds quotes
    text = str(error.args[0])
  return one_line(text)


# ------------------------------------------------------------------------------ parsing
@contextlib.contextmanager
def _sys_argv(argv: Sequence[str]) -> Iterator[None]:
  """config_flags reads `--config.<field>` overrides from sys.argv when the flag is defined
  and parsed; this points it at the argv being parsed (in-process runs pass their own)."""
  saved = sys.argv
  sys.argv = list(argv)
  try:
    yield
  finally:
    sys.argv = saved


def _config_flag_names(fv) -> list[str]:
  """Flags defined by `config_flags.DEFINE_config_file` (their parser loads a recipe file)."""
  return [name for name in fv if fv[name].name == name
          and fv[name].parser.flag_type() == "config object"]


def _given(argv: Sequence[str], name: str) -> str | None:
  """The value of `--name=value` / `--name value` in argv (the last one), or None."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def _check_config_files(fv, argv: Sequence[str]) -> None:
  for name in _config_flag_names(fv):
    value = _given(argv[1:], name)
    if value is None:
      continue
    path = value.split(":", 1)[0]
    if not os.path.isfile(os.path.expanduser(path)):
      here = sorted(p for p in os.listdir("configs") if p.endswith(".py") and p != "__init__.py"
                    ) if os.path.isdir("configs") else []
      raise UsageError(f"--{name}={value}: no such recipe file" + (
          f"; the recipes in ./configs are {here}" if here else
          "; give the path of a configs/*.py recipe"))


def _flag_error(error, fv) -> str:
  """absl's parse errors, reworded where they are cryptic."""
  from absl import flags
  text = str(error)
  m = re.match(r"flag --(\w[\w.]*)=None: Flag --\S+ must have a value other than None", text)
  if m:
    return f"--{m.group(1)} is required (see --help)"
  if isinstance(error, flags.UnrecognizedFlagError):
    name = error.flagname
    known = sorted({fv[n].name for n in fv})
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join('--' + c for c in close)}?" if close else ""
    return f"unknown flag --{name}{hint} (see --help for this tool's flags)"
  return one_line(text) + " (see --help)"


def _override_error(error: BaseException, argv: Sequence[str], config_names: list[str]) -> str:
  """An override naming no config key surfaces from config_flags as AttributeError/KeyError."""
  detail = error
  while isinstance(detail, (AttributeError, KeyError)) and detail.args and isinstance(
      detail.args[0], BaseException):
    detail = detail.args[0]
  text = one_line(str(detail.args[0] if detail.args else detail))
  prefixes = tuple(f"--{n}." for n in config_names)
  overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith(prefixes)]
  return (f"an override names no config key ({text}); overrides given: {overrides}. Every "
          "key and its default is in llama_jax/training/defaults.py")


def parse(program: Program, argv: Sequence[str]):
  """The program's flags parsed from `argv` (argv[0] is the program name): a `FlagValues`.

  Raises UsageError (or ConfigError for an override naming no config key) for anything the
  command line gets wrong; the config file itself is loaded here (config_flags does that).
  """
  from absl import flags
  fv = flags.FlagValues()
  flags.DEFINE_bool("verbose", False, "Show tracebacks and third-party library logs.",
                    flag_values=fv)
  with _sys_argv(argv):
    try:
      program.define_flags(fv)
      _check_config_files(fv, argv)
      rest = fv(list(argv))
    except flags.Error as e:
      raise UsageError(_flag_error(e, fv)) from e
    except (AttributeError, KeyError) as e:
      # A config flag with a default loads its recipe (and applies the overrides) while it is
      # being defined, so the flag may not be registered yet: recognise overrides by shape.
      names = sorted({a[2:].split(".", 1)[0] for a in argv[1:]
                      if re.match(r"--\w+\.\w", a)})
      if not names:
        raise
      raise ConfigError(_override_error(e, argv, names)) from e
    except (SyntaxError, ImportError, NameError) as e:  # a config file that is not a recipe
      raise UsageError(f"the config file could not be loaded as a recipe: "
                       f"{type(e).__name__}: {one_line(str(e))}") from e
  if len(rest) > 1:
    raise UsageError(f"unexpected argument(s) {rest[1:]}; every option is a --flag=value "
                     "(see --help)")
  return fv


# ------------------------------------------------------------------------------ help
def _metavar(flag) -> str:
  kind = flag.flag_type()
  if kind == "bool":
    return ""
  if kind == "config object":
    return "=FILE"
  if "enum" in kind:
    return "=" + "|".join(v for v in flag.parser.enum_values if v)
  if "multi" in kind or "repeat" in (flag.help or ""):
    return "=VALUE (repeatable)"
  if kind in ("int", "integer"):
    return "=N"
  if kind == "float":
    return "=X"
  if kind in ("list", "comma separated list of strings"):
    return "=A,B,..."
  return "=VALUE"


def _is_required(flag) -> bool:
  return any("must have a value other than None" in str(getattr(v, "message", ""))
             for v in getattr(flag, "validators", []))


def help_text(program: Program) -> str:
  """The usage text and every flag of `program` (not absl's own), as --help prints it."""
  from absl import flags
  fv = flags.FlagValues()
  with _sys_argv([program.name]):
    program.define_flags(fv)
  lines = [textwrap.dedent(program.usage).strip("\n"), "", "options:"]
  seen = set()
  names = [n for n in fv if fv[n].name == n] + ["verbose"]
  for name in names:
    if name in seen:
      continue
    seen.add(name)
    if name == "verbose":
      flag_line, help_line, default = "--verbose", "Show tracebacks and third-party logs.", None
    else:
      flag = fv[name]
      prefix = "--[no]" if flag.flag_type() == "bool" else "--"
      flag_line = f"{prefix}{name}{_metavar(flag)}"
      help_line = " ".join((flag.help or "").split())
      # absl decorates some help texts; the flag line already says it.
      help_line = re.sub(r"^<[^>]*>: ", "", help_line)
      help_line = help_line.replace(";  repeat this option to specify a list of values", "")
      help_line = help_line.replace("; repeat this option to specify a list of values", "")
      default = flag.default
      if flag.flag_type() == "config object":
        default = flag.default_as_str.strip("'") if flag.default is not None else None
        help_line += (f" Any field can be overridden: --{name}.<field>=<value>, e.g. "
                      f"--{name}.steps=100.")
      if _is_required(flag):
        help_line += " (required)"
    if isinstance(default, list):
      default = ",".join(map(str, default))
    shown = "" if default in (None, "", ()) or name == "verbose" else f" (default: {default})"
    lines.append(f"  {flag_line}")
    lines += textwrap.wrap(help_line + shown, width=96, initial_indent="      ",
                           subsequent_indent="      ")
  lines += ["", "exit status: 0 done, 1 failure (files, data, checkpoints), 2 usage error"
            + (", 75 preempted (checkpoint saved; rerun to resume)" if program.name == "train"
               else "")]
  return "\n".join(lines)


# ------------------------------------------------------------------------------ run
def main(program: Program, argv: Sequence[str] | None = None) -> int:
  """Runs `program` on `argv` (default sys.argv) and returns its exit status (see the module
  docstring); never raises for a user mistake. Tests call this in-process."""
  argv = list(sys.argv if argv is None else argv) or [program.command]
  if any(a in HELP_FLAGS for a in argv[1:]):
    print(help_text(program))
    return OK
  verbose = any(a in ("--verbose", "--verbose=true", "--verbose=1") for a in argv[1:])
  logs.configure(verbose)
  try:
    if program.prepare_argv is not None:
      argv = list(program.prepare_argv(argv))
    fv = parse(program, argv)
    status = program.main([argv[0]], fv)
    return OK if status is None else int(status)
  except KeyboardInterrupt:
    print(f"{program.name}: interrupted", file=sys.stderr)
    return INTERRUPTED
  except Exception as error:
    status = exit_status(error)
    if status is None or verbose:
      traceback.print_exc()
    if status is None:
      print(f"{program.name}: internal error ({type(error).__name__}); the traceback above "
            "is a bug in llama_jax, please report it", file=sys.stderr)
      return FAILURE
    print(f"{program.name}: error: {describe(error)}", file=sys.stderr)
    return status
  finally:
    sys.stdout.flush()


def run(program: Program) -> None:
  """`main(program)` and exit with its status: the entry point of `python -m llama_jax.<tool>`."""
  sys.exit(main(program))
