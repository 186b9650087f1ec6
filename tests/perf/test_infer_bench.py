"""`bench --mode=eval|generate` on the tiny recipe (records written, same numbers as HF), and
compile counts that do not grow with the windows scored or the tokens decoded."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from llama_jax.evals import perplexity
from llama_jax.inference import generate as gen
from llama_jax.model import llama
from llama_jax.model.config import ModelConfig
from llama_jax.perf import infer_bench

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path, *args):
  proc = subprocess.run(
      [sys.executable, "-m", "llama_jax.bench", f"--config={ROOT / 'configs' / 'tiny.py'}",
       f"--out={tmp_path}", "--steps=1", "--warmup=1", "--torch_threads=1", "--malloc=system",
       *args], capture_output=True, text=True, cwd=ROOT, timeout=600,
      env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def test_eval_mode_on_tiny_writes_records_equal_to_hf_and_compiles_nothing_while_timed(tmp_path):
  _bench(tmp_path, "--mode=eval", "--seq_lens=32,64")
  data = json.loads((tmp_path / "eval.json").read_text())
  assert data["header"]["mode"] == "eval" and "allocator" in data["header"]
  rows = {(r["impl"], r["seq_len"]): r for r in data["records"]}
  assert set(rows) == {(i, t) for i in ("llama_jax", "llama_jax_forward", "hf_torch",
                                        "hf_torch_forward") for t in (32, 64)}
  for t in (32, 64):
    mine, ref = rows[("llama_jax", t)], rows[("hf_torch", t)]
    assert mine["windows"] == 2 * mine["batch"] and mine["batch"] == 4096 // t
    assert mine["tokens_per_sec"] > 0 and mine["vs_hf_torch"] > 0
    assert abs(mine["ppl"] - ref["ppl"]) < 1e-4 * ref["ppl"]  # same weights, same numbers
    assert mine["compiles_timed"] == rows[("llama_jax_forward", t)]["compiles_timed"] == 0
  assert (tmp_path / "eval.md").read_text().count("\n| ") == 1 + 8
  assert (tmp_path / "eval.png").read_bytes()[:4] == b"\x89PNG"


def test_generate_mode_on_tiny_writes_records_with_hf_tokens_equal(tmp_path):
  _bench(tmp_path, "--mode=generate", "--gen_batches=1,3", "--gen_prompt=16", "--gen_new=8")
  data = json.loads((tmp_path / "generate.json").read_text())
  rows = {(r["impl"], r["batch"]): r for r in data["records"]}
  assert set(rows) == {(i, b) for i in ("llama_jax", "hf_torch_dynamic", "hf_torch_static")
                       for b in (1, 3)}
  for r in rows.values():
    assert r["same_tokens_as_llama_jax"], r["impl"]  # greedy: HF decodes the same tokens
    assert r["prefill_seconds"] > 0 and r["total_seconds"] > 0
  assert rows[("llama_jax", 1)]["compiles_timed"] == rows[("llama_jax", 3)]["compiles_timed"] == 0
  assert (tmp_path / "generate.png").read_bytes()[:4] == b"\x89PNG"


CFG = ModelConfig(vocab_size=128, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64,
                  max_position_embeddings=64, scan_layers=False)


def test_scoring_compiles_once_whatever_the_number_of_window_batches():
  model = llama.init(CFG)
  counter = infer_bench.CompileCounter()
  doc = np.random.RandomState(0).randint(3, 128, size=600).tolist()
  counts = []
  for n_docs in (1, 2, 5):  # 4, 8 and 20 batches of 4 windows
    with counter:
      perplexity.evaluate(model, [doc] * n_docs, [32], stride=16, bos_id=1, batch_size=4)
    counts.append(counter.count)
  assert counts[1] == counts[2] == 0  # compiled by the first call only


def test_decoding_compiles_the_same_programs_whatever_the_number_of_new_tokens():
  model = llama.init(CFG)
  counter = infer_bench.CompileCounter()
  prompt = [[5, 6, 7, 8, 9]]
  counts = {}
  for new in (4, 16, 48):
    with counter:
      gen.generate(model, prompt, new)
    counts[new] = counter.count
    with counter:  # the same call again: everything is cached
      gen.generate(model, prompt, new)
    assert counter.count == 0
  # A new length compiles one prefill (the cache is longer) and one decode loop, whatever the
  # number of tokens; the first call also compiles a few small helpers.
  assert counts[16] == counts[48] == 2 and counts[4] <= 6
