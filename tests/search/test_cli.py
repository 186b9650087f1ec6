"""`python -m llama_jax.search` on a tiny converted checkpoint: the model-backed objective agrees
with `evaluate`, rope.json reaches evaluate / generate / train / the HF export, and bad requests
fail with clear errors before anything is written."""
import json
import math
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax
import numpy as np
import pytest

from llama_jax import evaluate as evaluate_lib
from llama_jax import generate as generate_lib
from llama_jax.core.errors import ConfigError, DataError
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig
from llama_jax.rope import RopeConfig
from llama_jax.rope.config import read_json
from llama_jax.search import __main__ as cli
from llama_jax.search import command, driver, journal

ROOT = Path(__file__).resolve().parents[2]
ORIGINAL = 32  # the tiny model's context; the searches target 4x
TARGET = 128


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  from llama_jax.data import tokenizer as tokenizer_lib
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  texts = [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:8]]
  return tokenizer_lib.train_tokenizer(texts, 400, tmp_path_factory.mktemp("tok") / "t.model")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
  from llama_jax import convert
  cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                    ffn_dim=64, norm_eps=1e-5, max_position_embeddings=ORIGINAL, init_std=0.2)
  params = jax.tree.map(np.asarray, spec_lib.to_params(model_lib.init(cfg, seed=0)))
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  convert.save_converted(path, cfg, params)
  return path


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
  root = tmp_path_factory.mktemp("docs")
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  for i, name in enumerate(("bisect.py", "colorsys.py", "keyword.py")):
    (root / f"doc{i}.txt").write_text((stdlib / name).read_text(encoding="utf-8")[:3000])
  return str(root / "*.txt")


def _request(checkpoint, tok, docs, out, **kw):
  base = {"method": "dcis", "checkpoint": str(checkpoint), "tokenizer": str(tok.path),
          "files": docs, "target_len": TARGET, "out": str(out), "progress": False,
          # a random model's perplexity is far above DCIS's cut-off of 100
          "options": {"candidates": 3, "max_ppl": 1e9}}
  return command.Request(**{**base, **kw})


@pytest.fixture(scope="module")
def searched(checkpoint, tok, docs, tmp_path_factory):
  out = tmp_path_factory.mktemp("search") / "dcis"
  return out, command.run(_request(checkpoint, tok, docs, out))


def test_search_writes_its_record_and_rope_json(searched):
  out, record = searched
  saved = json.loads((out / driver.SEARCH_FILE).read_text())
  assert saved["long_factor"] == record["long_factor"] and len(saved["long_factor"]) == 8
  assert saved["evaluations"] == 1 + 3 * 14 == len(saved["history"])
  assert saved["settings"]["factor"] == TARGET / ORIGINAL
  first = saved["history"][0]
  assert first["ppl"] == saved["start_ppl"] and first["phase"] == "start"
  # λ is a traced input: the whole search, over many distinct factor vectors, compiles once.
  entries = (out / journal.STATE_FILE).read_text().splitlines()[1:]
  assert len({tuple(json.loads(e)["factors"]) for e in entries}) > 20
  assert saved["compiles"] == 1
  rope = RopeConfig.from_dict(read_json(str(out / driver.ROPE_FILE)))
  assert rope.rope_type == "longrope" and list(rope.long_factor) == record["long_factor"]
  assert rope.short_factor == rope.long_factor and rope.factor == 4.0
  assert rope.attention_factor == pytest.approx(0.1 * math.log(4) + 1)
  assert rope.original_max_position_embeddings == ORIGINAL
  assert not list(out.glob(".*tmp*"))


def test_objective_equals_evaluate_with_the_written_rope_json(searched, checkpoint, tok, docs):
  """The search's perplexity of its result is what `evaluate --rope_json` measures (truncated
  mode at the target, the first document), and its start is YaRN at the same scale."""
  out, record = searched
  common = {"task": "perplexity", "checkpoint": str(checkpoint), "tokenizer": str(tok.path),
            "files": docs, "lengths": [TARGET], "truncate": True, "max_documents": 1,
            "out": str(out)}
  with_rope = evaluate_lib.Options(rope=read_json(str(out / driver.ROPE_FILE)), **common)
  got = json.loads(evaluate_lib.run(with_rope)["json"].read_text())["results"][0]
  assert got["ppl"] == pytest.approx(record["best_ppl"], rel=1e-6)
  yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL}
  got = json.loads(evaluate_lib.run(evaluate_lib.Options(rope=yarn, label="yarn", **common))[
      "json"].read_text())["results"][0]
  assert got["ppl"] == pytest.approx(record["start_ppl"], rel=1e-4)


def test_rope_json_reaches_generate_train_and_the_hf_export(searched, checkpoint, tmp_path):
  from transformers import LlamaForCausalLM

  from llama_jax import convert
  from llama_jax.interop import convert as convert_lib
  from llama_jax.training import defaults, recipes, validation
  out, record = searched
  rope_json = str(out / driver.ROPE_FILE)
  cfg = convert_lib.load_config(checkpoint)
  overrides = generate_lib.model_overrides(cfg, rope_json)
  assert list(overrides["rope"].long_factor) == record["long_factor"]
  model = convert.load_model(checkpoint, **overrides)
  assert generate_lib.generate(model, [[1, 5, 9]], 3) and model.cfg.rope == overrides["rope"]

  c = recipes.load("tiny")
  c.model.head_dim = cfg.head_dim  # λ has one factor per pair of the searched model's heads
  defaults.set_rope(c, read_json(rope_json))
  assert validation.validate(c).model.rope.long_factor == tuple(record["long_factor"])

  # HF export: rope_parameters unchanged, and HF's longrope computes the same logits past L.
  hf_dir = tmp_path / "hf"
  ours = convert.load_model(checkpoint, rope=overrides["rope"])
  params = jax.tree.map(np.asarray, spec_lib.to_params(ours))
  from llama_jax.interop import hf as hf_format
  hf_format.write_hf(hf_dir, ours.cfg, params)
  saved = json.loads((hf_dir / "config.json").read_text())["rope_parameters"]
  assert saved == {**read_json(rope_json), "rope_type": "longrope"}
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (1, 48))  # 48 > L = 32
  import torch
  hf_model = LlamaForCausalLM.from_pretrained(hf_dir).eval()
  with torch.no_grad():
    want = hf_model(torch.as_tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours(tokens)), want, atol=1e-4, rtol=0)


def test_a_killed_cli_search_resumes(searched, checkpoint, tok, docs, tmp_path):
  """The journal written by the model-backed search replays: a rerun evaluates nothing new."""
  out, record = searched
  again = command.run(_request(checkpoint, tok, docs, out))
  assert again["replayed"] == again["evaluations"] == record["evaluations"]
  assert again["long_factor"] == record["long_factor"]


def test_bad_requests_fail_before_anything_is_written(checkpoint, tok, docs, tmp_path):
  out = tmp_path / "out"
  with pytest.raises(DataError, match=r"target_len=100000 needs documents of at least 99999 "
                                      r"tokens .* the longest of the 3 given has \d+, \d+ short"):
    command.run(_request(checkpoint, tok, docs, out, target_len=100000))
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"long_factor": [1.0] * 5}))
  with pytest.raises(ConfigError, match=r"shape \(5,\); it needs head_dim/2 = 8"):
    command.run(_request(checkpoint, tok, docs, out, init=str(bad)))
  with pytest.raises(ValueError, match="cannot run Self-Extend|model.attention='nope'"):
    command.run(_request(checkpoint, tok, docs, out, attention="nope"))
  with pytest.raises(ConfigError, match="do not apply to --method=dcis"):
    command.run(_request(checkpoint, tok, docs, out, options={"population": 8}))
  assert not out.exists()


def test_flags_and_one_line_errors(checkpoint, tok, docs, tmp_path):
  from absl import flags
  fv = flags.FlagValues()
  cli.define_flags(fv)
  fv(["search", "--method=evolution", f"--checkpoint={checkpoint}", "--target_len=128",
      "--out=o", "--nomonotone", "--iterations=3", "--files=x"])
  req = cli.request_from_flags(fv)
  assert req.options == {"monotone": False, "iterations": 3} and req.max_documents == 1
  fv2 = flags.FlagValues()
  cli.define_flags(fv2)
  fv2(["search", "--method=dcis", "--checkpoint=c", "--target_len=128", "--out=o",
       "--population=4", "--initial_range=-2,2"])
  with pytest.raises(ValueError, match=r"\['--population'\] do not apply to --method=dcis"):
    cli.request_from_flags(fv2)

  out = tmp_path / "never"
  proc = subprocess.run(
      [sys.executable, "-m", "llama_jax.search", "--method=dcis", f"--checkpoint={checkpoint}",
       f"--tokenizer={tok.path}", f"--files={docs}", "--target_len=100000", f"--out={out}"],
      capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
      env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 1 and "Traceback" not in proc.stderr
  assert proc.stderr.strip().startswith("search: error: target_len=100000 needs documents")
  assert not out.exists() and not any(out.parent.glob(f".{out.name}*"))


def test_train_cli_takes_rope_json_and_validates_it_before_writing(searched, tmp_path):
  out, _ = searched
  workdir = tmp_path / "run"

  def train(rope_json):
    return subprocess.run(
        [sys.executable, "-m", "llama_jax.train", "--config=configs/tiny.py",
         f"--workdir={workdir}", f"--rope_json={rope_json}", "--config.steps=0"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
        env=dict(os.environ, JAX_PLATFORMS="cpu"))

  # configs/tiny.py has head_dim 32: a vector of another length than 16 is refused by name.
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({**read_json(str(out / driver.ROPE_FILE)),
                             "short_factor": [1.0] * 3, "long_factor": [1.0] * 3}))
  proc = train(bad)  # a config that cannot work: exit status 2 (core.cli)
  assert proc.returncode == 2 and "Traceback" not in proc.stderr
  assert "rope.short_factor has 3 entries; it needs head_dim/2 = 16" in proc.stderr
  proc = train('{"rope_type": "longrope", "scale": 2}')
  assert "unknown RoPE field(s) ['scale']" in proc.stderr and proc.returncode == 2
  assert not workdir.exists()


def test_traced_factors_score_as_the_static_model(checkpoint, tok, docs):
  """The search's traced-λ scorer equals rebuilding the model with λ as config constants."""
  import numpy as np

  from llama_jax.data import documents
  from llama_jax.interop import convert
  from llama_jax.search import factors as factors_lib
  from llama_jax.search import objective
  model = convert.load_model(str(checkpoint))
  names, toks = documents.load_documents(docs, tok)
  names, toks = objective.truncated_documents(toks, names, TARGET, max_documents=2)
  rope_for = lambda lam: factors_lib.rope_config(lam, 4.0, ORIGINAL, model.cfg.rope.rope_theta)
  traced = objective.TracedScorer(model, toks, TARGET, tok.bos_id, rope_for)
  static = objective.RebuildScorer(model, toks, TARGET, tok.bos_id, rope_for)
  for lam in (np.linspace(0.5, 5.0, 8), np.full(8, 2.0)):
    for a, b in zip(traced(lam), static(lam)):
      np.testing.assert_array_equal(a, b)
