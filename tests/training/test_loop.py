"""The training loop end to end (`train.run`) on 8 simulated CPU devices, and its bad inputs.

A small corpus of standard-library files, a tokenizer trained on it, a tiny model, a few steps.
"""
import hashlib
import json
import logging
import shutil
import sysconfig
import warnings
from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

from llama_jax import data
from llama_jax.checkpoints import converted as checkpoint_io
from llama_jax.checkpoints import manager as checkpoint
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.training import defaults as base
from llama_jax.training import loop as train
from llama_jax.training import state as state_lib
from llama_jax.training import validation as config_lib
from llama_jax.training import workdir as workdir_lib


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
  """16 standard-library modules of 4-16 KB as .txt files (deterministic choice)."""
  root = tmp_path_factory.mktemp("corpus")
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  picked = [p for p in sorted(stdlib.glob("*.py")) if 4_000 < p.stat().st_size < 16_000][:16]
  assert len(picked) == 16
  for p in picked:
    shutil.copy(p, root / (p.stem + ".txt"))
  return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("cache")  # tokenizer and tokens, shared by the tests


def small_config(corpus: Path, cache: Path, **top) -> ml_collections.ConfigDict:
  c = base.get_config()
  c.model = base.model_fields("tiny", vocab_size=320, d_model=64, n_layers=2, n_heads=4,
                              n_kv_heads=2, ffn_dim=128, max_position_embeddings=64)
  c.seq_len, c.batch_size, c.steps = 64, 8, 6
  c.optim.update(dict(peak_lr=1e-2, warmup_steps=1))
  c.log_every, c.eval_every, c.eval_batches, c.checkpoint_every = 1, 3, 2, 3
  c.sample_prompt, c.sample_tokens = "def ", 8
  c.data.update(dict(files=str(corpus / "*.txt"), cache_dir=str(cache), heldout_fraction=0.2))
  c.mesh.update(dict(data=2, fsdp=4, tensor=1, sequence=1))
  for k, v in top.items():
    c[k] = v
  return config_lib.lock(c)


def snapshot(directory: Path) -> dict[str, str]:
  """{relative path: sha256} of every file under `directory`."""
  return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(directory.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------ happy path
def test_run_trains_evaluates_checkpoints_and_samples(corpus, cache, tmp_path, capsys):
  workdir = tmp_path / "run"
  c = small_config(corpus, cache)
  result = train.run(c, str(workdir))
  out = capsys.readouterr().out

  assert (result.start_step, result.final_step, result.stopped_early) == (0, 6, False)
  assert sorted(result.losses) == list(range(1, 7))
  assert result.losses[6] < result.losses[1]
  assert sorted(result.evals) == [3, 6]
  e3, e6 = result.evals[3], result.evals[6]
  assert e6["eval_loss"] < e3["eval_loss"]  # held-out perplexity falls
  assert e6["eval_perplexity"] == pytest.approx(np.exp(e6["eval_loss"]))
  assert result.sample is not None and result.sample.startswith("def ")
  # The summary, progress lines, evaluation and sample reach the console.
  for text in ("devices   8", "mesh      data=2 x fsdp=4", "parameters", "tok/s", "MFU",
               "ETA", "held-out loss", "sample"):
    assert text in out, text

  # The state is really sharded over fsdp.
  q = result.state.params["layers"]["attention"]["q"]
  assert q.sharding.spec[1] == "fsdp" and q.addressable_shards[0].data.shape[1] == 64 // 4

  # Checkpoints at 3 and 6 with the data position; the resolved config; metrics.
  mgr = checkpoint.CheckpointManager(str(workdir), keep=3)
  assert mgr.all_steps() == [3, 6]
  mgr.close()
  assert json.loads((workdir / "config.json").read_text()) == json.loads(
      workdir_lib.to_json(c))
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  train_records = [r for r in records if "loss" in r]
  assert [r["step"] for r in train_records] == list(range(1, 7))
  for r in train_records:
    assert r["step_loss"] == pytest.approx(result.losses[r["step"]])
    assert r["data_crc32"] == f"{result.data_crc32[r['step']]:08x}"
    assert r["tokens_per_sec"] > 0 and 0 < r["mfu"] < 1
  assert [r["step"] for r in records if "eval_loss" in r] == [3, 6]
  assert list(workdir.glob("events.out.tfevents.*"))

  # Rerunning the finished command does no more steps and changes no checkpoint.
  before = snapshot(workdir / "checkpoints")
  again = train.run(c, str(workdir))
  assert (again.start_step, again.final_step, again.losses) == (6, 6, {})
  assert snapshot(workdir / "checkpoints") == before


def test_init_from_a_converted_checkpoint_and_from_a_training_workdir(corpus, cache, tmp_path):
  c = small_config(corpus, cache, steps=2, eval_every=0, checkpoint_every=0, sample_tokens=0)
  tc = config_lib.validate(c, n_devices=8)
  saved = spec_lib.to_params(model_lib.init(tc.model, seed=123))
  saved = jax.tree.map(np.asarray, saved)
  checkpoint_io.save_converted(tmp_path / "converted", tc.model, saved)
  source = train.run(c, str(tmp_path / "source"))  # a training workdir to start from

  mesh = mesh_lib.make_mesh(c.mesh)
  tx, _ = state_lib.make_optimizer(tc.spec, c.optim, c.steps)
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(tc.spec, tx, c.seed)
    shardings = state_lib.state_shardings(abstract, tc.spec, mesh)
    for path, want in ((tmp_path / "converted", saved),
                       (tmp_path / "source", jax.tree.map(np.asarray, source.state.params))):
      c2 = small_config(corpus, cache, init_from=str(path))
      got = train._init_params(config_lib.validate(c2, n_devices=8), shardings)
      jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, got), want)
      assert got["embed"].sharding == shardings.params["embed"]


# ------------------------------------------------------------------------------ bad inputs
def test_empty_corpus_is_an_error_and_writes_nothing(tmp_path, cache):
  corpus = tmp_path / "empty"
  corpus.mkdir()
  (corpus / "a.txt").write_text("")
  (corpus / "b.txt").write_text("   \n\n")
  workdir = tmp_path / "run"
  with pytest.raises(data.DataError):
    train.run(small_config(corpus, cache), str(workdir))
  assert not workdir.exists()


def test_non_utf8_files_are_skipped_or_rejected(corpus, cache, tmp_path, caplog):
  bad_only = tmp_path / "bad"
  bad_only.mkdir()
  (bad_only / "latin1.txt").write_bytes("caf\xe9 na\xefve\n".encode("latin-1") * 50)
  workdir = tmp_path / "run"
  with pytest.raises(data.DataError, match="UTF-8|utf-8"):
    train.run(small_config(bad_only, cache), str(workdir))
  assert not workdir.exists()

  mixed = tmp_path / "mixed"
  shutil.copytree(corpus, mixed)
  shutil.copy(bad_only / "latin1.txt", mixed / "latin1.txt")
  c = small_config(mixed, tmp_path / "cache2", steps=2, eval_every=0, checkpoint_every=0,
                   sample_tokens=0)
  # The skip is reported as a warning (which absl may route to logging once it is set up).
  with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
    warnings.simplefilter("always")
    result = train.run(c, str(workdir))
  assert result.final_step == 2
  assert any("latin1.txt" in m and "not UTF-8" in m
             for m in [str(w.message) for w in caught] + [caplog.text])


def test_tokenizer_larger_than_the_model_is_an_error(corpus, cache, tmp_path):
  from llama_jax.data import tokenizer as tokenizer_lib
  path = str(tmp_path / "big.model")
  texts = [p.read_text() for p in sorted(corpus.glob("*.txt"))]
  tokenizer_lib.train_tokenizer(texts, 400, path)
  c = small_config(corpus, cache)
  c.data.tokenizer = path
  with pytest.raises(config_lib.ConfigError, match="has 400 tokens but model.vocab_size=320"):
    train.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_mesh_that_does_not_divide_the_devices_is_an_error(corpus, cache, tmp_path):
  c = small_config(corpus, cache)
  c.mesh.update(dict(data=3, fsdp=1))
  with pytest.raises(config_lib.ConfigError, match="has 3 devices but 8 are available"):
    train.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "run").exists()


def test_corrupt_latest_checkpoint_falls_back_and_keeps_the_files(corpus, cache, tmp_path,
                                                                  caplog):
  workdir = tmp_path / "run"
  c = small_config(corpus, cache, steps=4, checkpoint_every=2, eval_every=0, sample_tokens=0)
  straight = train.run(c, str(workdir))
  # Damage every array file of the latest step (4).
  damaged = [p for p in (workdir / "checkpoints" / "4").rglob("*")
             if p.is_file() and p.stat().st_size > 0 and "state" in p.parts]
  assert damaged
  for p in damaged:
    p.write_bytes(b"\0" * 7)
  corrupt = snapshot(workdir / "checkpoints" / "4")

  with caplog.at_level(logging.WARNING):
    resumed = train.run(c, str(workdir))
  assert "step 4" in caplog.text and "could not be restored" in caplog.text
  assert resumed.start_step == 2
  # Resuming from step 2 redoes steps 3-4 exactly.
  assert resumed.losses == {s: straight.losses[s] for s in (3, 4)}
  # The unreadable step was kept (moved aside), never deleted or overwritten in place.
  aside = [p for p in (workdir / "checkpoints").iterdir() if p.name.startswith("4.corrupt")]
  assert len(aside) == 1 and snapshot(aside[0]) == corrupt


def test_nan_loss_stops_with_a_clear_error(corpus, cache, tmp_path):
  c = small_config(corpus, cache, steps=3, eval_every=0, checkpoint_every=1, sample_tokens=0)
  c.optim.peak_lr = 1e30
  c.optim.clip_norm = 0.0
  with pytest.raises(FloatingPointError, match=r"training loss is (nan|inf)"):
    train.run(c, str(tmp_path / "run"))
