"""The benchmark harness on a tiny model: records, files, arithmetic, memory scaling, CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_jax.perf import benchmark as bench
from llama_jax.perf import report as bench_report
from llama_jax.training import recipes

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
            ffn_dim=128, max_position_embeddings=64, attention_block_size=16)


def _config(**model):
  c = recipes.load("bench_34m")
  c.model.update(dict(TINY, **model))
  c.batch_size, c.seq_len = 2, 32
  c.optim.warmup_steps = 2
  return c


def test_bench_34m_config_is_the_briefed_model():
  from llama_jax.training import validation as config_lib
  cfg = config_lib.validate(recipes.load("bench_34m"), check_paths=False).model
  assert (cfg.vocab_size, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.ffn_dim) == (
      8192, 512, 8, 8, 1408)
  assert cfg.dtype == cfg.param_dtype == "float32"
  assert 33e6 < cfg.num_params() < 35e6
  c = recipes.load("bench_34m")
  assert (c.batch_size, c.seq_len) == (8, 512)


def test_timed_run_writes_json_markdown_and_plot_with_every_impl(tmp_path):
  records = bench.run(_config(), str(tmp_path), [32], ["xla", "chunked", "hf_torch"], steps=2,
                      warmup=1, torch_threads=1, name="tiny")
  data = json.loads((tmp_path / "bench.json").read_text())
  assert data["records"] == json.loads(json.dumps(records))
  assert {r["impl"] for r in records} == {"xla", "chunked", "hf_torch"}
  for r in records:
    assert "error" not in r, r
    for key in ("impl", "seq_len", "batch", "tokens_per_sec", "mfu", "peak_memory_bytes",
                "step_seconds", "model_tflops_per_sec", "mfu_datasheet"):
      assert r[key] is not None, (r["impl"], key)
    assert r["seq_len"] == 32 and r["batch"] == 2
    assert r["tokens_per_sec"] == pytest.approx(64 / r["step_seconds"])
    assert r["peak_memory_bytes"] > 0
    assert 4.0 < r["final_loss"] < 7.5  # ~ln(256) = 5.5 for untrained models on random tokens
  jax_rows = [r for r in records if r["impl"] != "hf_torch"]
  assert all(r["compile_seconds"] > 0 for r in jax_rows)
  assert records[-1]["vs_hf_torch"] == pytest.approx(1.0)
  assert data["header"]["step_compile"].startswith("backend: compiler_options")
  md = (tmp_path / "bench.md").read_text()
  assert md.count("\n| ") == 1 + len(records)  # header + one row each
  assert "hf_torch" in md and "MFU" in md
  assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_chunked_memory_is_linear_and_xla_quadratic_in_sequence_length(tmp_path):
  c = _config(max_position_embeddings=2048, attention_block_size=128)
  c.batch_size, c.seq_len = 1, 1024
  records = bench.run(c, str(tmp_path), [1024, 2048], ["xla", "chunked"], time_steps=False,
                      batch_mode="fixed")
  mem = {(r["impl"], r["seq_len"]): r["peak_memory_bytes"] for r in records}
  assert mem[("chunked", 2048)] <= 2.2 * mem[("chunked", 1024)]
  assert mem[("xla", 2048)] >= 2.5 * mem[("xla", 1024)]
  assert all(r["tokens_per_sec"] is None for r in records)  # compile only


def test_batch_modes():
  c = _config()
  c.batch_size, c.seq_len = 8, 512
  assert [bench.batch_for(c, t, "tokens") for t in (256, 512, 2048, 8192)] == [16, 8, 2, 1]
  assert [bench.batch_for(c, t, "fixed") for t in (256, 8192)] == [8, 8]


def test_rates_and_mfu_arithmetic():
  record = {"impl": "x", "seq_len": 100, "batch": 4, "step_seconds": 0.5}
  peaks = {"measured": 2e9, "datasheet": 8e9}
  bench_report.add_rates(record, flops_per_token=1e6, peaks=peaks)
  assert record["tokens_per_sec"] == 800
  assert record["model_tflops_per_sec"] == pytest.approx(8e8 / 1e12)
  assert record["mfu"] == pytest.approx(0.4) and record["mfu_datasheet"] == pytest.approx(0.1)


def test_cpu_theoretical_peak_reads_the_isa_and_clock():
  peak, source = bench_report.cpu_theoretical_peak()
  if not os.path.exists("/proc/cpuinfo"):
    pytest.skip("no /proc/cpuinfo on this OS")
  assert peak > 1e9 and "cores" in source and "MHz" in source


def test_bad_arguments_are_rejected(tmp_path):
  with pytest.raises(ValueError, match="neither 'hf_torch' nor an attention kernel"):
    bench.run(_config(), str(tmp_path), [32], ["flash"])
  with pytest.raises(ValueError, match="--steps"):
    bench.run(_config(), str(tmp_path), [32], ["xla"], steps=0)
  with pytest.raises(ValueError, match="--step_compile='fast'"):
    bench.run(_config(), str(tmp_path), [32], ["xla"], step_compile="fast")


def test_command_line_compile_only(tmp_path):
  overrides = [f"--config.model.{k}={v}" for k, v in TINY.items()]
  proc = subprocess.run(
      [sys.executable, "-m", "llama_jax.bench", f"--config={ROOT / 'configs' / 'bench_34m.py'}",
       f"--out={tmp_path}", "--seq_lens=32,64", "--impls=xla,chunked", "--time=false",
       "--config.batch_size=2", "--config.seq_len=32", *overrides],
      capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  data = json.loads((tmp_path / "bench.json").read_text())
  assert [(r["impl"], r["seq_len"], r["batch"]) for r in data["records"]] == [
      ("xla", 32, 2), ("chunked", 32, 2), ("xla", 64, 1), ("chunked", 64, 1)]
  assert data["header"]["command"].startswith("python -m llama_jax.bench --config=")
  assert "--time=false" in data["header"]["command"]
