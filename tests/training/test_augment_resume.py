"""A run with E²-LLM draws, killed (SIGKILL) after a checkpoint and rerun, draws exactly what the
uninterrupted run drew: same g and t (logged as augment_e2llm_g / _t), same losses, bit for bit.

Same subprocess pattern as `test_resume.py` (2 simulated CPU devices, mesh fsdp=2), shorter:
the draws are `fold_in(state.rng, step)`, so the point is that the restored state and step
reproduce them.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.training.test_resume import committed_steps, corpus, records, xla_flags  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
N = 16


def command(texts: Path, cache: Path, workdir: Path) -> list[str]:
  flags = {
      "steps": N, "batch_size": 4, "seq_len": 32, "log_every": 1, "eval_every": 0,
      "checkpoint_every": 4, "keep_checkpoints": 10, "sample_tokens": 0,
      "optim.peak_lr": 3e-3, "optim.warmup_steps": 2, "model.vocab_size": 320,
      "model.d_model": 32, "model.n_layers": 1, "model.n_heads": 4, "model.n_kv_heads": 2,
      "model.ffn_dim": 64, "model.max_position_embeddings": 64,
      "data.files": str(texts / "*.txt"), "data.cache_dir": str(cache), "mesh.data": 1,
      "mesh.fsdp": 2, "augment.name": "e2llm", "augment.e2llm.g_max": 4,
      "augment.e2llm.window": 16, "augment.e2llm.n_sink": 2, "augment.e2llm.per": "example"}
  return [sys.executable, "-m", "llama_jax.train", "--config=configs/tiny.py",
          f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items())]


def environment(compile_cache: Path) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(2),
              JAX_COMPILATION_CACHE_DIR=str(compile_cache),
              JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
              JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def test_sigkilled_e2llm_run_resumes_with_the_same_draws(corpus, tmp_path):  # noqa: F811
  env = environment(tmp_path / "xla_cache")
  cache = tmp_path / "data_cache"
  reference = tmp_path / "straight"
  out = subprocess.run(command(corpus, cache, reference), cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]

  workdir = tmp_path / "killed"
  cmd = command(corpus, cache, workdir)
  proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 900
  try:
    while time.time() < deadline and proc.poll() is None:
      if 8 in committed_steps(workdir):
        proc.send_signal(signal.SIGKILL)
        break
      time.sleep(0.02)
    proc.communicate(timeout=300)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  killed_at = committed_steps(workdir)
  assert 8 in killed_at and N not in killed_at, killed_at
  out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f"resumed from the checkpoint of step {max(killed_at)}" in out.stdout

  got, want = records(workdir), records(reference)
  assert sorted(got) == sorted(want) == list(range(1, N + 1))
  for step in range(1, N + 1):
    for key in ("augment_e2llm_g", "augment_e2llm_t", "data_crc32", "step_loss"):
      assert got[step][key] == want[step][key], (step, key)
  draws = {(r["augment_e2llm_g"], r["augment_e2llm_t"]) for r in want.values()}
  assert len(draws) > N // 2  # the steps drew different values (the test can see a mismatch)
