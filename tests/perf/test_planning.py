"""AOT memory planning: the recipe's step compiled for 8 simulated CPU devices, nothing
allocated."""
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from llama_jax.perf import planning as plan_lib
from llama_jax.training import recipes

ROOT = Path(__file__).resolve().parents[2]


def _config(**overrides):
  c = recipes.load("tiny")
  c.model.update(dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      ffn_dim=128, max_position_embeddings=256))
  c.batch_size, c.seq_len, c.grad_accum, c.steps = 8, 64, 1, 10
  c.optim.warmup_steps = 2
  for key, value in overrides.items():
    node = c
    *path, leaf = key.split(".")
    for part in path:
      node = node[part]
    node[leaf] = value
  return c


def test_fsdp_shards_parameters_and_optimizer_state():
  r = plan_lib.plan(_config(**{"mesh.data": 1, "mesh.fsdp": 8}), 8)
  b, total = r["per_device_bytes"], r["total_bytes"]
  assert r["mesh"]["fsdp"] == 8
  # Everything with an `embed` axis is split 8 ways; only the norm scales are replicated.
  norms = 4 * (2 * 2 * 64 + 64)
  assert b["params"] == (total["params"] - norms) // 8 + norms
  # Adam's two moments, sharded alike, plus its step counters.
  assert 0 <= b["optimizer_state"] - 2 * b["params"] <= 64
  # The compiled program holds the sharded state (plus the batch shard) as its arguments.
  assert b["argument_bytes"] >= b["params"] + b["optimizer_state"]
  assert b["argument_bytes"] < b["params"] + b["optimizer_state"] + 64 * 1024
  assert b["alias_bytes"] > 0  # the state is donated
  assert b["peak_bytes"] == (b["argument_bytes"] + b["output_bytes"] - b["alias_bytes"]
                             + b["temp_bytes"])


def test_data_parallel_replicates_the_state():
  r = plan_lib.plan(_config(**{"mesh.data": 8, "mesh.fsdp": 1}), 8)
  assert r["per_device_bytes"]["params"] == r["total_bytes"]["params"]
  assert r["per_device_bytes"]["optimizer_state"] == r["total_bytes"]["optimizer_state"]


def test_activation_memory_follows_sequence_length_and_attention_kernel():
  temp = lambda **kw: plan_lib.plan(_config(**kw), 8)["per_device_bytes"]["temp_bytes"]
  short, long = temp(seq_len=128), temp(seq_len=256)
  assert long > 1.8 * short  # xla attention: at least linear, here partly quadratic
  chunked = temp(seq_len=256, **{"model.attention": "chunked",
                                 "model.attention_block_size": 32})
  assert chunked < long


def test_xla_flop_count_matches_the_model_formula_when_nothing_is_looped():
  """Unrolled layers, no remat, one loss chunk: XLA's count covers the whole step."""
  r = plan_lib.plan(_config(**{"model.scan_layers": False, "mesh.data": 8}), 8)
  f = r["flops_per_step"]
  # XLA also counts the non-causal half of the score matrices, softmax, norms and AdamW.
  assert 1.0 < f["xla_cost_analysis_per_device"] / f["model_formula_per_device"] < 1.3


def test_fit_and_time_estimates():
  r = plan_lib.plan(_config(), 8, hbm_gib=1e-4, peak_tflops=1.0, mfu=0.5)
  assert r["fits"]["fits"] is False and r["fits"]["headroom_gib"] < 0
  want = r["flops_per_step"]["model_formula_per_device"] / 0.5e12
  assert r["time_estimate"]["step_seconds"] == pytest.approx(want)
  assert "NO" in plan_lib.format_report("tiny", r)


def test_bad_mesh_and_device_count_raise_clear_errors():
  with pytest.raises(ValueError, match="mesh"):
    plan_lib.plan(_config(**{"mesh.data": 3, "mesh.fsdp": 1}), 8)
  with pytest.raises(ValueError, match="own process"):
    plan_lib.plan(_config(), len(jax.devices()) + 1)


def test_command_line_sets_up_its_own_simulated_devices(tmp_path):
  out = tmp_path / "plan.json"
  env = dict(os.environ, XLA_FLAGS="", PYTHONPATH=str(ROOT))
  proc = subprocess.run(
      [sys.executable, "-m", "llama_jax.plan", f"--config={ROOT / 'configs' / 'tiny.py'}",
       "--devices=16", "--config.mesh.data=2", "--config.mesh.fsdp=8",
       "--config.batch_size=16", "--config.seq_len=64", "--hbm_gib=16", f"--out={out}"],
      capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "on 16 devices (data=2 x fsdp=8)" in proc.stdout
  assert "fits in 16 GiB: YES" in proc.stdout
  report = json.loads(out.read_text())
  assert report["devices"] == 16 and report["mesh"]["fsdp"] == 8
  assert report["per_device_bytes"]["peak_bytes"] > 0
