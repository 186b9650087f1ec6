"""Multi-host training as two local processes x 4 CPU devices through `jax.distributed` (gloo).

The two processes run `python -m llama_jax.train --coordinator_address=localhost:PORT
--num_processes=2 --process_id=i` on one 8-device mesh (data=2 x fsdp=4, so both the batch and
the parameters span the processes); each loads its half of every batch. Their losses must
equal those of one process driving 8 devices (this pytest process), step by step.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import ml_collections
import pytest

from llama_jax.training import loop as train
from llama_jax.training import validation as config_lib

ROOT = Path(__file__).resolve().parents[2]
STEPS = 4
SETTINGS = {
    "steps": STEPS, "batch_size": 8, "seq_len": 32, "log_every": 1, "eval_every": 2,
    "eval_batches": 2, "checkpoint_every": 2, "sample_tokens": 4, "optim.peak_lr": 1e-2,
    "optim.warmup_steps": 1, "model.vocab_size": 320, "model.d_model": 32, "model.n_layers": 2,
    "model.n_heads": 4, "model.n_kv_heads": 2, "model.ffn_dim": 64,
    "model.max_position_embeddings": 64, "data.heldout_fraction": 0.2, "mesh.data": 2,
    "mesh.fsdp": 4}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  root = tmp_path_factory.mktemp("corpus")
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  for p in [p for p in sorted(stdlib.glob("*.py")) if 4_000 < p.stat().st_size < 16_000][:16]:
    shutil.copy(p, root / (p.stem + ".txt"))
  return root


def xla_flags(devices: int) -> str:
  """This session's XLA_FLAGS (tests/conftest.py) with another simulated CPU device count."""
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count=")]
  return " ".join([f"--xla_force_host_platform_device_count={devices}", *flags])


def settings(corpus: Path, cache: Path) -> dict:
  return dict(SETTINGS, **{"data.files": str(corpus / "*.txt"), "data.cache_dir": str(cache)})


def one_process_config(values: dict) -> ml_collections.ConfigDict:
  from llama_jax.training import recipes
  c = recipes.load("tiny")
  for key, value in values.items():
    node = c
    *parents, leaf = key.split(".")
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config_lib.lock(c)


def test_two_processes_match_one_process(corpus, tmp_path):
  import portpicker
  values = settings(corpus, tmp_path / "cache")
  # One process, 8 devices; this also prepares the tokenizer and tokens the others reuse.
  single = train.run(one_process_config(values), str(tmp_path / "single"))
  assert sorted(single.losses) == list(range(1, STEPS + 1))

  port = portpicker.pick_unused_port()
  workdir = tmp_path / "multi"
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=xla_flags(4))
  procs = []
  for pid in range(2):
    cmd = [sys.executable, "-m", "llama_jax.train", "--config=configs/tiny.py",
           f"--workdir={workdir}", f"--coordinator_address=localhost:{port}",
           "--num_processes=2", f"--process_id={pid}",
           *(f"--config.{k}={v}" for k, v in values.items())]
    procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=600))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, (_out, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-4000:]

  out0, out1 = outputs[0][0], outputs[1][0]
  assert "devices   8" in out0 and "over 2 process(es)" in out0
  assert "mesh      data=2 x fsdp=4" in out0
  assert "step 4/4" in out0
  assert "step " not in out1 and "devices" not in out1  # only process 0 reports
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  losses = {r["step"]: r["step_loss"] for r in records if "step_loss" in r}
  evals = {r["step"]: r["eval_loss"] for r in records if "eval_loss" in r}
  assert sorted(losses) == list(range(1, STEPS + 1))
  for step, loss in losses.items():
    assert loss == pytest.approx(single.losses[step], rel=1e-5), step
  for step, loss in evals.items():
    assert loss == pytest.approx(single.evals[step]["eval_loss"], rel=1e-5), step
  assert sorted(evals) == [2, 4]
  # Both processes wrote their shards of the checkpoints; the sample ran on the global mesh.
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()) == \
      ["2", "4"]
  assert "sample    (greedy" in out0
  assert single.sample in out0
