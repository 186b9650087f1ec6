"""Perplexity against an independent torch implementation of the protocol on HF models; passkey
prompts, scoring and the end-to-end evaluation CLI (JSON + PNG)."""
import json
import math
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import jax
import numpy as np
import pytest

from llama_jax import evaluate as evaluate_lib
from llama_jax.core.errors import DataError
from llama_jax.data import documents
from llama_jax.evals import passkey, perplexity, plots
from llama_jax.interop import hf_layout as weights
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig
from llama_jax.rope import RopeConfig
from llama_jax.rope.config import apply_overrides
from tests.references import hf_reference as hf

BOS = 1


# ------------------------------------------------------------------------------- perplexity
def test_windows_follow_the_protocol():
  W = perplexity.Window
  # N=10, W=5 (4 tokens + BOS), S=2: each window scores what the previous one did not.
  assert perplexity.windows(10, 5, 2) == [W(0, 0, 4, 4), W(0, 2, 6, 2), W(0, 4, 8, 2),
                                          W(0, 6, 10, 2)]
  assert perplexity.windows(10, 5, 2, truncate=True) == [W(0, 0, 4, 4)]
  assert perplexity.windows(3, 5, 2, truncate=True) == [W(0, 0, 3, 3)]
  # Stride longer than the window: gap tokens 4 and 9 are never scored.
  assert perplexity.windows(10, 5, 5) == [W(0, 0, 4, 4), W(0, 5, 9, 4)]
  for n, length, stride in [(100, 17, 5), (37, 8, 7), (7, 16, 3), (64, 16, 15)]:
    scored = []
    for w in perplexity.windows(n, length, stride):
      assert w.end - w.begin <= length - 1 and w.n_scored >= 1
      scored += range(w.end - w.n_scored, w.end)
    assert scored == list(range(n))  # every token exactly once, in order


def _reference_perplexity(hf_model, docs, length, stride, truncate):
  """The sliding-window protocol written directly on HF `LlamaForCausalLM` with `labels`
  (HF shifts them and averages over those != -100): per-window losses and scored counts."""
  import torch
  span = length - 1
  losses, counts = [], []
  for doc in docs:
    doc = torch.as_tensor(doc[:span] if truncate else doc)[None]
    step = span if truncate else stride
    n, prev_end = doc.shape[1], 0
    for begin in range(0, n, step):
      end = min(begin + span, n)
      trg_len = end - prev_end
      ids = torch.cat([torch.tensor([[BOS]]), doc[:, begin:end]], dim=1)
      labels = ids.clone()
      labels[:, :-trg_len] = -100
      with torch.no_grad():
        losses.append(float(hf_model(ids, labels=labels).loss))
      counts.append(int((labels[:, 1:] != -100).sum()))
      prev_end = end
      if end == n:
        break
  return np.array(losses), np.array(counts)


def _hf_and_ours(rope_parameters, **config):
  """A random small HF Llama, weights scaled up so attention is sharp and positions matter."""
  import torch
  hf_cfg = hf.hf_config(rope_parameters, head_dim=16, **config)
  hf_model = hf.hf_model(hf_cfg)
  with torch.no_grad():
    for name, p in hf_model.named_parameters():
      if "norm" not in name:
        p.mul_(4.0)
  cfg = ModelConfig.from_hf(hf_cfg.to_dict())
  params = weights.hf_to_params(cfg, hf.hf_state(hf_model).__getitem__)
  return hf_model, spec_lib.from_params(cfg, params)


LONGROPE = {"rope_type": "longrope", "original_max_position_embeddings": 16,
            "rope_theta": 10000.0, "short_factor": [1.0 + 0.05 * i for i in range(8)],
            "long_factor": [1.0 + 1.5 * i for i in range(8)]}


@pytest.mark.parametrize("rope,length,stride,truncate", [
    (None, 24, 8, False),
    # Windows of 10 and 22+ tokens share a padded batch; LongRoPE switches factor sets at 16,
    # so a window that saw the padding's positions would use the wrong set.
    (LONGROPE, 24, 8, False),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
      "rope_theta": 10000.0}, 24, 24, True),
    (None, 12, 16, False),  # stride > window: gaps, whole windows scored
])
def test_perplexity_matches_a_torch_implementation_on_hf(rope, length, stride, truncate):
  hf_model, model = _hf_and_ours(rope)
  rng = np.random.RandomState(0)
  docs = [rng.randint(3, 128, n).tolist() for n in (70, 45, 9)]
  losses, counts = _reference_perplexity(hf_model, docs, length, stride, truncate)
  wins = [w for i, d in enumerate(docs)
          for w in perplexity.windows(len(d), length, stride, truncate, doc=i)]
  sums, n_scored = perplexity.score_windows(model, docs, wins, length, BOS, batch_size=2)
  np.testing.assert_array_equal(n_scored, counts)
  np.testing.assert_allclose(sums / n_scored, losses, rtol=2e-6, atol=2e-6)  # window by window
  (got,) = perplexity.evaluate(model, docs, [length], stride=stride, bos_id=BOS,
                               truncate=truncate, batch_size=2)
  assert got["n_windows"] == len(losses) and got["n_tokens"] == counts.sum()
  np.testing.assert_allclose(got["mean_nll"], losses.mean(), rtol=1e-5)
  np.testing.assert_allclose(got["ppl"], math.exp(losses.mean()), rtol=1e-5)
  weighted = (losses * counts).sum() / counts.sum()
  np.testing.assert_allclose(got["token_weighted_ppl"], math.exp(weighted), rtol=1e-5)
  if not truncate:  # the two averages differ when windows score different numbers of tokens
    assert abs(got["ppl"] - got["token_weighted_ppl"]) > 1e-4


# ---------------------------------------------------------------------------------- passkey
@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  """A small BPE tokenizer trained on the passkey phrases and some standard-library source."""
  from llama_jax.data import tokenizer as tokenizer_lib
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  texts = [passkey.TASK, passkey.GARBAGE, passkey.key_line(12345), passkey.QUESTION] * 50
  texts += [p.read_text(encoding="utf-8") for p in sorted(stdlib.glob("*.py"))[:8]]
  return tokenizer_lib.train_tokenizer(texts, 512, tmp_path_factory.mktemp("tok") / "t.model")


def test_find_garbage_length_is_the_longest_that_fits():
  monotone = lambda n: 40 + n // 3
  for target in (40, 41, 57, 100, 1000):
    for step in (1, 16, 128):
      for hint in (0, 16, 800, 100000):
        n = passkey.find_garbage_length(monotone, target, step, hint)
        brute = max(m for m in range(0, 4000) if monotone(m) <= target)
        assert n == brute, (target, step, hint)
  # Not monotone (a cut word can tokenize longer than the next one): never over the target,
  # and one more character passes it.
  wobbly = lambda n: 40 + n // 3 + (5 if (n // 16) % 3 == 0 else 0)
  for target in (60, 123, 400):
    for hint in (0, 2000):
      n = passkey.find_garbage_length(wobbly, target, 16, hint)
      assert wobbly(n) <= target < wobbly(n + 1)
  with pytest.raises(ValueError, match="too short"):
    passkey.find_garbage_length(monotone, 39, 16)


@pytest.mark.parametrize("target,depth", [(128, 0.0), (200, 0.5), (256, 0.3), (300, 1.0),
                                          (1000, 0.5)])
def test_passkey_prompt_length_depth_and_parts(tok, target, depth):
  p = passkey.build_prompt(tok, target, depth, key=4321, step=32)
  # The requested token count (BOS included), never over it and within a few tokens of it:
  # the reference protocol overshot by up to a 128-character step (153 tokens for 128).
  assert target - 3 <= len(p.tokens) <= target, len(p.tokens)
  longer = tok.encode(passkey.prompt_text(p.n_garbage + 1, depth, 4321), bos=True)
  assert len(longer) > target  # one more garbage character would pass it
  assert p.tokens == tok.encode(p.text, bos=True, eos=False) and p.tokens[0] == tok.bos_id

  parts = p.text.split("\n")
  assert len(parts) == 5
  assert parts[0] == passkey.TASK and parts[4] == passkey.QUESTION
  assert parts[2] == "The pass key is 4321. Remember it. 4321 is the pass key."
  assert len(parts[1]) == round(depth * p.n_garbage)
  assert len(parts[1]) + len(parts[3]) == p.n_garbage
  assert (parts[1] + " " + parts[3]).strip().startswith(passkey.GARBAGE[:40])
  # In tokens too, the key sits at `depth` of the garbage.
  before = len(tok.encode("\n".join(parts[:2]), bos=True)) - len(tok.encode(parts[0], bos=True))
  garbage_tokens = len(p.tokens) - len(tok.encode(passkey.prompt_text(0, depth, 4321), bos=True))
  assert abs(before / garbage_tokens - depth) < 0.05, (before, garbage_tokens)


def test_answer_parser_takes_the_first_integer():
  assert passkey.parse_answer(" 31415. Remember it. 27") == 31415
  assert passkey.parse_answer("is: key-0042 or 7") == 42
  assert passkey.parse_answer(" unknown.") is None


def test_passkey_scoring_with_oracle_and_wrong_answers(tok):
  def oracle(offset):
    def generate_fn(prompts):
      out = []
      for tokens in prompts:
        key = int(re.search(r"The pass key is (\d+)\.", tok.decode(tokens)).group(1))
        out.append(tok.encode(f" {key + offset}. Remember", bos=False) + [tok.eos_id, 5, 6])
      return out
    return generate_fn

  kw = dict(lengths=[128, 160], depths=[0.0, 0.5, 1.0], trials=3, seed=7, step=64)
  right = passkey.evaluate(oracle(0), tok, **kw)
  assert right["accuracy"] == [[1.0] * 3] * 2
  assert len(right["records"]) == 2 * 3 * 3
  assert all(1 <= r["key"] <= passkey.MAX_KEY and r["length"] - 3 <= r["n_tokens"] <= r["length"]
             for r in right["records"])
  wrong = passkey.evaluate(oracle(1), tok, **kw)
  assert wrong["accuracy"] == [[0.0] * 3] * 2
  assert [r["key"] for r in wrong["records"]] == [r["key"] for r in right["records"]]  # seeded


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
  from llama_jax import convert
  cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                    ffn_dim=96, norm_eps=1e-5, max_position_embeddings=64, init_std=0.05)
  params = jax.tree.map(np.asarray, spec_lib.to_params(model_lib.init(cfg, seed=0)))
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  convert.save_converted(path, cfg, params)
  return path


@pytest.fixture(scope="module")
def text_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("docs")
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  for i, name in enumerate(("bisect.py", "colorsys.py", "keyword.py")):
    (root / f"doc{i}.txt").write_text((stdlib / name).read_text(encoding="utf-8")[:1500])
  return root


def _png(path):
  return Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_end_to_end_perplexity_passkey_and_plots(checkpoint, tok, text_files, tmp_path,
                                                 caplog):
  out = tmp_path / "results"
  base = dict(checkpoint=str(checkpoint), tokenizer=str(tok.path), out=str(out))
  opts = evaluate_lib.Options(task="perplexity", files=str(text_files / "*.txt"),
                              lengths=[32, 64], stride=16, batch_size=2, **base)
  written = evaluate_lib.run(opts)
  first = json.loads(written["json"].read_text())
  assert first["task"] == "perplexity" and first["mode"] == "sliding"
  assert [r["length"] for r in first["results"]] == [32, 64]
  assert len(first["documents"]) == 3
  assert all(np.isfinite(r["ppl"]) and r["ppl"] > 1 for r in first["results"])
  assert _png(written["png"])

  # The same model with YaRN applied at inference, compared in one plot.
  yarn = dict(rope_type="yarn", factor=2.0, original_max_position_embeddings=32)
  opts2 = evaluate_lib.Options(task="perplexity", files=str(text_files / "*.txt"),
                               lengths=[32, 64], stride=16, rope=yarn,
                               compare=[str(written["json"])], **base)
  second = json.loads(evaluate_lib.run(opts2)["json"].read_text())
  assert second["rope"]["rope_type"] == "yarn" and second["label"] != first["label"]
  assert second["results"][1]["ppl"] != first["results"][1]["ppl"]  # the override is used
  fig = plots.perplexity_figure([first, second])
  assert [line.get_label() for line in fig.axes[0].get_lines()] == [first["label"],
                                                                     second["label"]]

  # Windows up to max_position_embeddings=64 (also with YaRN s=2 from 32): no warning.
  assert not [r for r in caplog.records if "go past" in r.getMessage()]
  opts3 = evaluate_lib.Options(task="passkey", lengths=[128, 160], depths=[0.0, 1.0], trials=2,
                               batch_size=2, garbage_step=64, **base)
  written3 = evaluate_lib.run(opts3)
  past = [r.getMessage() for r in caplog.records if "go past" in r.getMessage()]
  assert past == ["passkey prompt length(s) [128, 160] go past the model's "
                  "max_position_embeddings=64, with no RoPE scaling: positions beyond it were "
                  "never trained, so expect degraded output there. Scale RoPE (e.g. "
                  "rope_type=yarn, factor=3, original_max_position_embeddings=64) or stay "
                  "within 64 tokens"]
  pk = json.loads(written3["json"].read_text())
  assert np.shape(pk["accuracy"]) == (2, 2) and len(pk["records"]) == 8
  assert all(r["length"] - 3 <= r["n_tokens"] <= r["length"] for r in pk["records"])
  assert _png(written3["png"])

  # Several result files → one perplexity plot and one heat-map per passkey run.
  plot_dir = tmp_path / "plots"
  made = evaluate_lib.run(evaluate_lib.Options(task="plot", out=str(plot_dir),
                                               results=[str(out / "*.json")]))
  assert sorted(p.name for p in plot_dir.iterdir()) == sorted(p.name for p in made.values())
  assert all(_png(p) for p in made.values()) and len(made) == 2
  assert not list(out.glob(".*tmp"))  # no temporary files left behind


def test_perplexity_plot_labels_its_log_axis_with_plain_numbers():
  runs = [{"task": "perplexity", "label": "a", "mode": "sliding",
           "results": [{"length": 32, "ppl": 78.0}, {"length": 64, "ppl": 66.0}]}]
  fig = plots.perplexity_figure(runs)
  fig.canvas.draw()
  labels = [t.get_text() for t in fig.axes[0].get_yticklabels() if t.get_text()]
  assert labels == ["65", "70", "75", "80"], labels  # not 6.6×10¹ / 7.8×10¹
  assert not [t.get_text() for t in fig.axes[0].yaxis.get_minorticklabels() if t.get_text()]
  assert plots.log_ticks(16.8, 59.2)[0] == 20 and plots.plain_number(12500) == "12,500"


def test_truncated_mode_and_min_tokens(checkpoint, tok, text_files, tmp_path):
  opts = evaluate_lib.Options(task="perplexity", files=str(text_files / "*.txt"), lengths=[48],
                              truncate=True, min_tokens=10 ** 6, checkpoint=str(checkpoint),
                              tokenizer=str(tok.path), out=str(tmp_path))
  with pytest.raises(ValueError, match="has at least 1000000 tokens"):
    evaluate_lib.run(opts)
  opts.options["min_tokens"] = 0
  data = json.loads(evaluate_lib.run(opts)["json"].read_text())
  assert data["mode"] == "truncated" and data["results"][0]["n_windows"] == 3
  assert data["results"][0]["n_tokens"] == 3 * 47  # each document cut to W - 1 tokens


def test_rope_overrides_and_bad_options(checkpoint, tok, tmp_path):
  base = RopeConfig(rope_type="llama3", rope_theta=500000.0, factor=8.0, low_freq_factor=1.0,
                    high_freq_factor=4.0, original_max_position_embeddings=8192,
                    max_position_embeddings=131072)
  yarn = apply_overrides(base, {"rope_type": "yarn", "factor": 4.0})
  assert (yarn.rope_type, yarn.factor, yarn.rope_theta, yarn.low_freq_factor) == (
      "yarn", 4.0, 500000.0, None)
  assert apply_overrides(base, {"factor": 2.0}).low_freq_factor == 1.0
  with pytest.raises(ValueError, match="unknown RoPE field"):
    apply_overrides(base, {"scale": 2.0})

  common = dict(checkpoint=str(checkpoint), tokenizer=str(tok.path), out=str(tmp_path))
  with pytest.raises(ValueError, match="rope_type='nope'"):
    evaluate_lib.run(evaluate_lib.Options(task="passkey", lengths=[128],
                                          rope={"rope_type": "nope"}, **common))
  with pytest.raises(ValueError, match="rope.factor is required"):
    evaluate_lib.run(evaluate_lib.Options(task="passkey", lengths=[128],
                                          rope={"rope_type": "linear"}, **common))
  with pytest.raises(DataError, match="matches no file"):
    evaluate_lib.run(evaluate_lib.Options(task="perplexity", lengths=[32],
                                          files=str(tmp_path / "none*.txt"), **common))
  with pytest.raises(ValueError, match="--task='ppl'"):
    evaluate_lib.run(evaluate_lib.Options(task="ppl", **common))
  with pytest.raises(ValueError, match="depths"):
    evaluate_lib.run(evaluate_lib.Options(task="passkey", lengths=[128], depths=[1.5], **common))


def test_options_from_flags(tmp_path):
  from absl import flags
  (tmp_path / "rope.json").write_text('{"beta_fast": 16, "factor": 2.0}')
  fv = flags.FlagValues()
  evaluate_lib.define_flags(fv)
  fv(["evaluate", "--task=perplexity", "--out=o", "--checkpoint=c", "--tokenizer=t",
      "--files=*.txt", "--lengths=1024,2048", "--truncate",
      f"--rope_json={tmp_path / 'rope.json'}", "--rope_type=yarn", "--factor=4",
      "--original_max_position_embeddings=4096", "--compare=a.json,b.json"])
  opts = evaluate_lib.options_from_flags(fv)
  resolved = opts.resolved()
  assert resolved["lengths"] == (1024, 2048) and resolved["truncate"]
  # Flags win over the JSON; fields not given stay unset (the checkpoint's values are kept).
  assert opts.rope == {"beta_fast": 16, "rope_type": "yarn", "factor": 4.0,
                       "original_max_position_embeddings": 4096}
  assert opts.compare == ["a.json", "b.json"] and resolved["stride"] == 256
  # An option of another task is refused, naming the flag and the task's options.
  fv2 = flags.FlagValues()
  evaluate_lib.define_flags(fv2)
  fv2(["evaluate", "--task=perplexity", "--out=o", "--depths=0,0.5,1"])
  with pytest.raises(ValueError, match=r"\['--depths'\] do not apply to --task=perplexity"):
    evaluate_lib.options_from_flags(fv2)
  passkey_fv = flags.FlagValues()
  evaluate_lib.define_flags(passkey_fv)
  passkey_fv(["evaluate", "--task=passkey", "--out=o", "--depths=0,0.5,1", "--lengths=64"])
  assert evaluate_lib.options_from_flags(passkey_fv).resolved()["depths"] == (0.0, 0.5, 1.0)


def test_cli_plots_result_files(tmp_path):
  run = {"task": "perplexity", "label": "a", "mode": "sliding",
         "results": [{"length": 32, "ppl": 9.0}, {"length": 64, "ppl": 8.0}]}
  (tmp_path / "a.json").write_text(json.dumps(run))
  (tmp_path / "b.json").write_text(json.dumps(dict(run, label="b")))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run(
      [sys.executable, "-m", "llama_jax.evaluate", "--task=plot",
       f"--results={tmp_path / '*.json'}", f"--out={tmp_path / 'plots'}"],
      capture_output=True, text=True, env=env, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert _png(tmp_path / "plots" / "perplexity.png") and "wrote" in proc.stdout


def test_documents_from_a_tfds_split(tok, monkeypatch):
  from llama_jax.data import sources
  records = [{"text": b"short"}, {"text": "def f(x):\n    return x * 2\n" * 5},
             {"text": b"class A:\n    pass\n" * 5}, {"text": b"import os\n" * 9}]
  monkeypatch.setattr(sources, "open_tfds", lambda name, data_dir, split: (records, 4, "1.0.0"))
  names, docs = documents.load_tfds_documents("pg19", "test", "", "text", tok, min_tokens=10,
                                                 max_documents=2)
  assert names == ["pg19:test[1]", "pg19:test[2]"]
  assert docs[0] == tok.encode(records[1]["text"], bos=False)
  assert docs[1] == tok.encode(records[2]["text"].decode(), bos=False)
  with pytest.raises(ValueError, match="has at least 10000 tokens"):
    documents.load_tfds_documents("pg19", "test", "", "text", tok, min_tokens=10 ** 4)


def test_a_missing_tfds_dataset_says_how_to_prepare_it(tok, tmp_path):
  with pytest.raises(DataError, match="tfds build pg19"):
    documents.load_tfds_documents("pg19", "test", str(tmp_path), "text", tok)
  with pytest.raises(ValueError, match="exactly one of files"):
    evaluate_lib.run(evaluate_lib.Options(task="perplexity", out=str(tmp_path), lengths=[32],
                                          files="*.txt", dataset="pg19"))
