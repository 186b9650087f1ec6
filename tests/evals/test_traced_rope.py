"""RoPE values as arrays in perplexity scoring and generation: five λ vectors compile once and
each equals the model whose config holds it; E²-LLM inference (`e2llm_window`) equals PI with
g = ⌈length / L⌉; bad inputs are errors before any compilation."""
import json

import jax
import numpy as np
import pytest
from absl import flags
from flax import nnx

from llama_jax import evaluate as evaluate_lib
from llama_jax import generate as gen
from llama_jax.core.errors import ConfigError
from llama_jax.evals import perplexity
from llama_jax.model import llama as model_lib
from llama_jax.model.config import ModelConfig
from llama_jax.rope import RopeConfig, RopeInputs
from tests.evals.test_evaluate import checkpoint, tok  # noqa: F401  (fixtures)

HALF = 8
ORIG = 32
LONGROPE = RopeConfig("longrope", 1e4, short_factor=(1.0,) * HALF, long_factor=(1.0,) * HALF,
                      original_max_position_embeddings=ORIG, attention_factor=1.1)
MODEL = dict(vocab_size=96, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=2 * HALF,
             ffn_dim=64, norm_eps=1e-5, max_position_embeddings=128, init_std=0.1)


def model_with(rope: RopeConfig, params_from=None):
  model = model_lib.init(ModelConfig(rope=rope, **MODEL), seed=0)
  if params_from is not None:
    model = nnx.merge(nnx.graphdef(model), nnx.state(params_from))
  return model


def docs(n=3, length=150, seed=0):
  rng = np.random.RandomState(seed)
  return [list(rng.randint(3, 96, length)) for _ in range(n)]


class CompileCounter:
  """Counts XLA compilations (JAX's backend-compile monitoring events) while active."""
  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    self.count = 0
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):
    if event == self.EVENT:
      self.count += 1


COUNTER = CompileCounter()


def test_five_lambda_vectors_compile_once_and_equal_their_static_models():
  model = model_with(LONGROPE)
  texts = docs()
  rng = np.random.RandomState(1)
  lambdas = [1.0 + rng.uniform(0, 8, HALF).astype(np.float32) for _ in range(5)]

  def score(lam, m=model, inputs=True):
    return perplexity.evaluate(m, texts, [96], stride=96, bos_id=1, truncate=True, batch_size=2,
                               rope_inputs=RopeInputs(long_factor=lam) if inputs else None)[0]

  first = score(lambdas[0])
  before = COUNTER.count
  rows = [score(lam) for lam in lambdas[1:]]
  assert COUNTER.count == before, "a new λ recompiled"
  assert len({r["ppl"] for r in [first] + rows}) == 5  # every λ changes the result
  # Each equals the model whose config holds that λ (the search's rope.json), exactly.
  for lam, row in [(lambdas[0], first), (lambdas[3], rows[2])]:
    static = model_with(LONGROPE.replace(long_factor=tuple(float(x) for x in lam)), model)
    assert score(None, static, inputs=False)["ppl"] == row["ppl"]


def test_bad_lambda_is_an_error_before_compiling():
  model = model_with(LONGROPE)
  before = COUNTER.count
  with pytest.raises(ConfigError, match=r"long_factor has shape \(12,\) \(12 entries\); "
                     r"rope_type='longrope' with head_dim=16 needs head_dim/2 = 8"):
    perplexity.evaluate(model, docs(), [96], stride=96, bos_id=1, truncate=True,
                        rope_inputs=RopeInputs(long_factor=np.ones(12, np.float32)))
  with pytest.raises(ConfigError, match=r"windows share one value"):
    perplexity.evaluate(model, docs(), [96], stride=96, bos_id=1, truncate=True,
                        rope_inputs=RopeInputs(long_factor=np.ones((2, HALF), np.float32)))
  with pytest.raises(ConfigError, match=r"'factor' is not traced by rope_type='longrope'"):
    perplexity.evaluate(model, docs(), [96], stride=96, bos_id=1, truncate=True,
                        rope_inputs=RopeInputs(factor=np.float32(2)))
  assert COUNTER.count == before  # nothing was compiled


def test_e2llm_window_scores_each_length_with_g_equal_to_its_ratio():
  plain = model_with(RopeConfig("default", 1e4))
  texts = docs(length=200)
  got = perplexity.evaluate(plain, texts, [32, 64, 96], stride=16, bos_id=1, batch_size=4,
                            e2llm_window=ORIG)
  assert [r["e2llm_scale"] for r in got] == [1, 2, 3]
  for row in got:
    g = row["e2llm_scale"]
    static = plain if g == 1 else model_with(RopeConfig("linear", 1e4, factor=float(g)), plain)
    want = perplexity.evaluate(static, texts, [row["length"]], stride=16, bos_id=1,
                               batch_size=4)[0]
    assert row["ppl"] == want["ppl"] and row["n_tokens"] == want["n_tokens"]
  with pytest.raises(ConfigError, match=r"e2llm_window=256 exceeds the model's "
                     r"max_position_embeddings=128"):
    perplexity.evaluate(plain, texts, [32], stride=16, bos_id=1, e2llm_window=256)


def test_generate_with_e2llm_window_equals_pi_with_each_prompts_scale():
  plain = model_with(RopeConfig("default", 1e4))
  rng = np.random.RandomState(3)
  prompts = [list(rng.randint(3, 96, 12)), list(rng.randint(3, 96, 50))]
  new = 8
  got = gen.generate(plain, prompts, new, e2llm_window=16)
  for prompt, row in zip(prompts, got):
    g = -(-(len(prompt) + new - 1) // 16)  # smallest g with g·16 >= the positions rotated
    static = model_with(RopeConfig("linear", 1e4, factor=float(g)), plain)
    assert row == gen.generate(static, [prompt], new)[0], g
  # Other values as arrays: the compiled prefill and decode loop are reused.
  gen.generate(plain, prompts, new, rope_inputs=RopeInputs(scale=np.array([1.5, 2.5])))
  before = COUNTER.count
  gen.generate(plain, prompts, new, rope_inputs=RopeInputs(scale=np.array([3.0, 1.25])))
  assert COUNTER.count == before
  with pytest.raises(ConfigError, match=r"scale has 3 rows for a batch of 2"):
    gen.generate(plain, prompts, new, rope_inputs=RopeInputs(scale=np.ones(3)))
  with pytest.raises(ConfigError, match=r"either e2llm_window .* or a rope input scale"):
    gen.generate(plain, prompts, new, e2llm_window=16, rope_inputs=RopeInputs(scale=np.ones(2)))
  fv = flags.FlagValues()
  gen.define_flags(fv)
  fv(["generate", "--checkpoint=c", "--tokenizer=t", "--prompt=p", "--e2llm_window=4096"])
  assert fv.e2llm_window == 4096


def test_evaluate_cli_takes_e2llm_window_for_perplexity_and_passkey(checkpoint, tok, tmp_path):  # noqa: F811
  fv = flags.FlagValues()
  evaluate_lib.define_flags(fv)
  fv(["evaluate", "--task=passkey", "--out=o", "--lengths=96", "--e2llm_window=32"])
  assert evaluate_lib.options_from_flags(fv).resolved()["e2llm_window"] == 32
  fv = flags.FlagValues()
  evaluate_lib.define_flags(fv)
  fv(["evaluate", "--task=perplexity", "--out=o", "--lengths=96", "--files=*.txt",
      "--e2llm_window=32"])
  assert evaluate_lib.options_from_flags(fv).resolved()["e2llm_window"] == 32
  opts = evaluate_lib.Options(task="passkey", lengths=[160], depths=[0.5], trials=1,
                              garbage_step=64, e2llm_window=32, checkpoint=str(checkpoint),
                              tokenizer=str(tok.path), out=str(tmp_path))
  record = json.loads(evaluate_lib.run(opts)["json"].read_text())
  assert record["options"]["e2llm_window"] == 32 and len(record["records"]) == 1
  with pytest.raises(ConfigError, match=r"passkey e2llm_window=-2; allowed: an integer >= 0"):
    evaluate_lib.Options(task="passkey", lengths=[96], e2llm_window=-2).resolved()
