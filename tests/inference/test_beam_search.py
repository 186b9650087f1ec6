"""Beam search with the KV cache against HF `generate(num_beams=4)` and against a beam search
written from HF's two algorithms (tests/references/beam_reference.py) on the same tiny model.

One model and one batch of four prompts (padded to one shape) serve every test, so the search
compiles once per convention and EOS setting. The EOS ids are tokens the beams really emit, so
hypotheses end both by EOS and by the token budget (asserted, so the comparison covers both).
"""
import numpy as np
import pytest

from llama_jax.inference import beam_search as bs
from llama_jax.inference import generate as gen
from llama_jax.interop import hf_layout as weights
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig
from tests.references import beam_reference as ref
from tests.references import hf_reference as hf

N = 14  # new tokens
PROMPTS = [np.random.RandomState(1).randint(3, 128, size=n).tolist() for n in (7, 12, 5, 9)]
EOS_IDS = (None, 7, 126)  # none; then tokens that end some of the best hypotheses early


@pytest.fixture(scope="module")
def next_logits(pair):
  """The reference's view of the HF model (memoised across the tests of this module)."""
  return ref.hf_next_logits(pair[0])


@pytest.fixture(scope="module")
def pair():
  """A random small HF Llama (GQA, 2 layers; weights scaled up so the beams disagree) and the
  same weights as a llama_jax model."""
  import torch
  hf_cfg = hf.hf_config(None, head_dim=16)
  hf_model = hf.hf_model(hf_cfg, seed=0)
  with torch.no_grad():
    for name, p in hf_model.named_parameters():
      if "norm" not in name:
        p.mul_(2.0)
  cfg = ModelConfig.from_hf(hf_cfg.to_dict())
  params = weights.hf_to_params(cfg, hf.hf_state(hf_model).__getitem__)
  return hf_model, spec_lib.from_params(cfg, params)


_HF_RUNS: dict = {}


def _hf_beam(hf_model, prompt, eos):
  """HF's (new tokens, sequence score) for one prompt (memoised: the tests share them)."""
  key = (id(hf_model), tuple(prompt), eos)
  if key not in _HF_RUNS:
    _HF_RUNS[key] = _hf_generate(hf_model, prompt, eos)
  return _HF_RUNS[key]


def _hf_generate(hf_model, prompt, eos):
  import torch
  out = hf_model.generate(torch.as_tensor([prompt]), max_new_tokens=N, num_beams=4,
                          do_sample=False, eos_token_id=eos, pad_token_id=0,
                          output_scores=True, return_dict_in_generate=True)
  return out.sequences[0, len(prompt):].tolist(), float(out.sequences_scores[0])


def test_current_convention_equals_hf_generate(pair):
  """Batched, cached beam search = HF transformers 5 `generate(num_beams=4)` one prompt at a
  time: the same tokens and sequence scores, with and without EOS."""
  hf_model, model = pair
  ended_by_eos = ran_out = 0
  for eos in EOS_IDS:
    got = bs.beam_search(model, PROMPTS, N, num_beams=4, eos_id=eos, convention="current",
                         pad_multiple=16)
    for p, tokens, score in zip(PROMPTS, got.tokens, got.scores):
      want, want_score = _hf_beam(hf_model, p, eos)
      assert tokens == want, (eos, p)
      assert score == pytest.approx(want_score, abs=1e-5)
      ended_by_eos += eos is not None and tokens[-1] == eos
      ran_out += len(tokens) == N
  assert ended_by_eos >= 3 and ran_out >= 6


def test_reference_implements_hf_current_beam_search(pair, next_logits):
  """The plain-Python reference (current convention, uncached forward) equals HF `generate`:
  it can then stand in for the legacy transformers the next test needs."""
  hf_model, _ = pair
  for eos in EOS_IDS[1:]:
    for p in PROMPTS:
      tokens, score = ref.beam_search(next_logits, p, N, 4, eos, convention="current")
      want, want_score = _hf_beam(hf_model, p, eos)
      assert tokens == want and score == pytest.approx(want_score, abs=1e-5)


def test_legacy_convention_equals_the_legacy_reference(pair, next_logits):
  """The legacy convention (transformers <= 4.3x, LLM-Adapters' runs) equals the reference
  written from that BeamSearchScorer; on these prompts it picks other answers than the current
  one in several cases (shorter ones: its lengths include the prompt and exclude the EOS)."""
  _, model = pair
  differ = 0
  for eos in EOS_IDS:
    legacy = bs.beam_search(model, PROMPTS, N, num_beams=4, eos_id=eos, convention="legacy",
                            pad_multiple=16)
    current = bs.beam_search(model, PROMPTS, N, num_beams=4, eos_id=eos, convention="current",
                             pad_multiple=16)
    for j, p in enumerate(PROMPTS):
      want, want_score = ref.beam_search(next_logits, p, N, 4, eos, convention="legacy")
      assert legacy.tokens[j] == want, (eos, j)
      assert legacy.scores[j] == pytest.approx(want_score, abs=1e-5)
      differ += legacy.tokens[j] != current.tokens[j]
  assert differ >= 2


def test_one_beam_without_eos_is_greedy(pair):
  _, model = pair
  greedy = gen.generate(model, PROMPTS, N, pad_multiple=16)
  for convention in bs.CONVENTIONS:
    got = bs.beam_search(model, PROMPTS, N, num_beams=1, convention=convention, pad_multiple=16)
    assert got.tokens == greedy


def test_length_penalty_changes_the_choice(pair, next_logits):
  """length_penalty is a traced value: 0 (no normalisation) and 2 choose other hypotheses."""
  _, model = pair
  outs = {}
  for lp in (0.0, 1.0, 2.0):
    got = bs.beam_search(model, PROMPTS[:1] * 4, N, num_beams=4, eos_id=7, length_penalty=lp,
                         convention="current", pad_multiple=16)
    want, _ = ref.beam_search(next_logits, PROMPTS[0], N, 4, 7, length_penalty=lp,
                              convention="current")
    assert got.tokens[0] == want
    outs[lp] = tuple(got.tokens[0])
  assert len(set(outs.values())) >= 2


def test_bad_arguments():
  cfg = ModelConfig(vocab_size=16, d_model=16, n_layers=1, n_heads=2, ffn_dim=32, norm_eps=1e-5)
  model = model_lib.init(cfg)
  with pytest.raises(ValueError, match="convention='new'"):
    bs.beam_search(model, [[1, 2]], 4, convention="new")
  with pytest.raises(ValueError, match="num_beams=0"):
    bs.beam_search(model, [[1, 2]], 4, num_beams=0)
  with pytest.raises(ValueError, match="num_beams=9 needs a vocabulary of at least 18"):
    bs.beam_search(model, [[1, 2]], 4, num_beams=9)
  with pytest.raises(ValueError, match="max_new_tokens=0"):
    bs.beam_search(model, [[1, 2]], 0)
  with pytest.raises(ValueError, match="eos_id=99"):
    bs.beam_search(model, [[1, 2]], 4, eos_id=99)
  with pytest.raises(ValueError, match="prompt 1"):
    bs.beam_search(model, [[1, 2], []], 4)
