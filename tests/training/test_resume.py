"""Resume exactness through the CLI: interrupted-and-rerun equals uninterrupted, bit for bit.

`python -m llama_jax.train` runs as a subprocess on 2 simulated CPU devices (mesh fsdp=2, so the
checkpointed state is sharded). The reference runs N steps straight. The interrupted run is
killed — SIGKILL right after a checkpoint has been committed, or SIGTERM (which must save and
exit cleanly) — then the same command is run again until N. Per-step losses, the CRC of the
tokens each step trained on (metrics.jsonl) and the final parameters must be identical.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 40


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  import shutil
  import sysconfig
  root = tmp_path_factory.mktemp("corpus")
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  for p in [p for p in sorted(stdlib.glob("*.py")) if 4_000 < p.stat().st_size < 16_000][:16]:
    shutil.copy(p, root / (p.stem + ".txt"))
  return root


def command(corpus: Path, cache: Path, workdir: Path) -> list[str]:
  flags = dict(
      steps=N, batch_size=4, seq_len=32, log_every=1, eval_every=0, checkpoint_every=5,
      keep_checkpoints=20, sample_tokens=0, **{
          "optim.peak_lr": 3e-3, "optim.warmup_steps": 2, "model.vocab_size": 320,
          "model.d_model": 32, "model.n_layers": 2, "model.n_heads": 4, "model.n_kv_heads": 2,
          "model.ffn_dim": 64, "model.max_position_embeddings": 64, "data.files":
          str(corpus / "*.txt"), "data.cache_dir": str(cache), "mesh.data": 1, "mesh.fsdp": 2})
  return [sys.executable, "-m", "llama_jax.train", "--config=configs/tiny.py",
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]


def xla_flags(devices: int) -> str:
  """This session's XLA_FLAGS (tests/conftest.py) with another simulated CPU device count."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count=")]
  return " ".join([f"--xla_force_host_platform_device_count={devices}", *flags])


COMPILATION_CACHE = None  # set by the `straight` fixture: later runs reuse its executables


def environment() -> dict:
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2))
  if COMPILATION_CACHE:
    env.update(JAX_COMPILATION_CACHE_DIR=str(COMPILATION_CACHE),
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def run_to_end(cmd) -> subprocess.CompletedProcess:
  out = subprocess.run(cmd, cwd=ROOT, env=environment(), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out


def committed_steps(workdir: Path) -> list[int]:
  ckpt = workdir / "checkpoints"
  return sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()) if ckpt.is_dir() else []


def interrupt(cmd, workdir: Path, sig: int, after_step: int) -> int:
  """Starts `cmd`, sends `sig` once checkpoint `after_step` is committed; returns the exit code."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 600
  try:
    while time.time() < deadline and proc.poll() is None:
      if after_step in committed_steps(workdir):
        proc.send_signal(sig)
        break
      time.sleep(0.02)
    output, _ = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode is not None
  interrupt.output = output
  return proc.returncode


def records(workdir: Path) -> dict[int, dict]:
  out = {}
  for line in (workdir / "metrics.jsonl").read_text().splitlines():
    r = json.loads(line)
    if "step_loss" in r:
      out[r["step"]] = r
  return out


def final_params(workdir: Path):
  import orbax.checkpoint as ocp
  path = workdir / "checkpoints" / str(N) / "state"
  with ocp.StandardCheckpointer() as ckptr:
    state = ckptr.restore(path)
  return state["params"]


@pytest.fixture(scope="module")
def straight(corpus, tmp_path_factory):
  global COMPILATION_CACHE
  base = tmp_path_factory.mktemp("straight")
  cache = base / "cache"
  COMPILATION_CACHE = base / "xla_cache"
  run_to_end(command(corpus, cache, base / "run"))
  return base / "run", cache


def assert_same_history(workdir: Path, reference: Path):
  got, want = records(workdir), records(reference)
  assert sorted(got) == sorted(want) == list(range(1, N + 1))
  for step in range(1, N + 1):
    # The same data (CRC of the tokens) and the same loss, bit for bit, at every step.
    assert got[step]["data_crc32"] == want[step]["data_crc32"], step
    assert got[step]["step_loss"] == want[step]["step_loss"], step
  assert len({r["data_crc32"] for r in want.values()}) == N  # the steps saw different data
  a, b = final_params(workdir), final_params(reference)
  jax.tree.map(np.testing.assert_array_equal, a, b)


def test_sigkill_after_a_checkpoint_then_rerun_equals_straight(corpus, straight, tmp_path):
  reference, cache = straight
  workdir = tmp_path / "run"
  cmd = command(corpus, cache, workdir)
  code = interrupt(cmd, workdir, signal.SIGKILL, after_step=10)
  assert code == -signal.SIGKILL, interrupt.output[-2000:]
  killed_at = committed_steps(workdir)
  assert 10 in killed_at and N not in killed_at, killed_at  # really interrupted mid-run
  out = run_to_end(cmd)
  assert f"resumed from the checkpoint of step {max(killed_at)}" in out.stdout
  assert_same_history(workdir, reference)


def interrupt_at_printed_step(cmd, sig: int, step: int) -> tuple[int, int, str]:
  """Starts `cmd` (log_every=1: a console line per step), sends `sig` as soon as it prints
  `step {step}/`; returns (exit code, the last step printed before the signal, output)."""
  proc = subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  lines, seen = [], 0
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("step "):
        seen = int(line.split()[1].split("/")[0])
        if seen >= step:
          proc.send_signal(sig)
          break
    rest, _ = proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  return proc.returncode, seen, "".join(lines) + rest


def test_sigterm_saves_at_the_next_step_exits_75_and_resumes(corpus, straight, tmp_path):
  reference, cache = straight
  workdir = tmp_path / "run"
  cmd = command(corpus, cache, workdir)
  code, signalled_at, output = interrupt_at_printed_step(cmd, signal.SIGTERM, step=7)
  # A distinct status a scheduler can requeue on (core/cli.py: PREEMPTED, sysexits' TEMPFAIL).
  assert code == 75, output[-3000:]
  assert "stopped   by a signal at step" in output and "exit status 75" in output
  stopped = int(output.split("stopped   by a signal at step ")[1].split(";")[0])
  # Honoured at the next step: the signal lands while step 8 (at most) runs.
  print(f"\nSIGTERM after step {signalled_at} was printed: stopped at step {stopped}")
  assert signalled_at <= stopped <= signalled_at + 2, (signalled_at, stopped)
  assert max(committed_steps(workdir)) == stopped  # the stop step itself was saved
  out = run_to_end(cmd)
  assert f"resumed from the checkpoint of step {stopped}" in out.stdout
  assert_same_history(workdir, reference)


def test_rerunning_a_finished_run_trains_and_saves_nothing(corpus, straight):
  reference, cache = straight
  steps = committed_steps(reference)
  files = sorted(p.name for p in reference.iterdir())
  out = run_to_end(command(corpus, cache, reference))
  assert f"the run was already complete at step {N} of {N}; nothing was trained" in out.stdout
  assert "saved     checkpoint" not in out.stdout
  assert not re.search(r"^step \d+/", out.stdout, re.M)  # no step ran
  assert committed_steps(reference) == steps
  assert sorted(p.name for p in reference.iterdir()) == files
