"""KV-cache generation against the uncached forward pass, HF `generate`, and NumPy sampling."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llama_jax import generate as gen
from llama_jax import rope as rope_lib
from llama_jax.inference import generate as generate_lib
from llama_jax.interop import hf_layout as weights
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig
from tests.references import hf_reference as hf

ORIG = 16  # original length of the test models; decoding runs past it

ROPES = {
    "default": dict(rope_type="default"),
    "linear": dict(rope_type="linear", factor=2.0),
    "ntk": dict(rope_type="ntk", factor=4.0),
    # HF `dynamic` reads max_position_embeddings (= ORIG below) as its original length.
    "dynamic": dict(rope_type="dynamic", factor=2.0),
    "ntk_by_parts": dict(rope_type="ntk_by_parts", factor=4.0,
                         original_max_position_embeddings=ORIG),
    "yarn": dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=ORIG),
    "dynamic_yarn": dict(rope_type="dynamic_yarn", original_max_position_embeddings=ORIG),
    "llama3": dict(rope_type="llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=ORIG),
    "longrope": dict(rope_type="longrope", original_max_position_embeddings=ORIG,
                     short_factor=[1.0 + 0.05 * i for i in range(8)],
                     long_factor=[1.0 + 1.5 * i for i in range(8)]),
}


def _model(rope, seed=0, **overrides):
  kw = dict(vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
            ffn_dim=96, norm_eps=1e-5, max_position_embeddings=ORIG, rope=rope, init_std=0.1)
  kw.update(overrides)
  return model_lib.init(ModelConfig(**kw), seed=seed)


@functools.partial(jax.jit, static_argnums=0)
def _jit_forward(graphdef, state, tokens, positions, segment_ids):
  return nnx.merge(graphdef, state)(tokens, positions, segment_ids)


def _forward(model, tokens, positions=None, segment_ids=None):
  """The model's plain (uncached) forward pass, jitted so the tests compile it once."""
  return np.asarray(_jit_forward(*nnx.split(model), jnp.asarray(tokens), positions, segment_ids))


def _prefix_logits(model, rows, length):
  """Uncached logits for every prefix of every row: out[r][n-1] = last logit of rows[r][:n].

  Each prefix is its own sequence (right-padded with segment id 0 at position 0, which causal
  attention never sees), so length-dependent RoPE sees exactly the prefix's length — the
  forward pass a fresh call on that prefix would make.
  """
  batch_tokens, batch_pos, batch_seg = [], [], []
  for row in rows:
    for n in range(1, len(row) + 1):
      tokens = np.zeros(length, np.int32)
      tokens[:n] = row[:n]
      pos = np.zeros(length, np.int32)
      pos[:n] = np.arange(n)
      seg = np.zeros(length, np.int32)
      seg[:n] = 1
      batch_tokens.append(tokens)
      batch_pos.append(pos)
      batch_seg.append(seg)
  logits = _forward(model, np.stack(batch_tokens), np.stack(batch_pos), np.stack(batch_seg))
  out, i = [], 0
  for row in rows:
    out.append(np.stack([logits[i + n - 1, n - 1] for n in range(1, len(row) + 1)]))
    i += len(row)
  return out


def _cached_and_uncached(model, total=26, prompt_lens=(11, 5), seed=1):
  """Teacher-forced cached decoding of two left-padded rows and the uncached reference.

  Returns [(got, want)] per row: logits at positions prompt_len-1 .. end, float32[n, V].
  """
  rng = np.random.RandomState(seed)
  steps = total - max(prompt_lens)
  rows = [rng.randint(0, 96, n + steps) for n in prompt_lens]  # 26 and 20 tokens
  want = _prefix_logits(model, rows, total)
  padded = gen.pad_prompts([r[:n] for r, n in zip(rows, prompt_lens)])
  logits, cache = gen.prefill(model, padded, max_len=total)
  got = [[np.asarray(logits[b])] for b in range(2)]
  lengths = list(prompt_lens)
  for _ in range(steps):  # feed each row's next true token
    logits, cache = gen.decode_step(model, [rows[b][lengths[b]] for b in range(2)], lengths,
                                    cache)
    for b in range(2):
      got[b].append(np.asarray(logits[b]))
    lengths = [n + 1 for n in lengths]
  return [(np.stack(got[b]), want[b][prompt_lens[b] - 1:]) for b in range(2)], prompt_lens


STATIC = [n for n in ROPES if not rope_lib.get(ROPES[n]["rope_type"]).depends_on_length]
DYNAMIC = [n for n in ROPES if rope_lib.get(ROPES[n]["rope_type"]).depends_on_length]


@pytest.mark.parametrize("name,n_layers", [(n, 2) for n in STATIC] + [(n, 1) for n in DYNAMIC])
def test_cached_decoding_equals_the_uncached_forward(name, n_layers):
  """Every step of cached decoding, across the original length, equals a fresh forward pass
  over the same prefix. For length-dependent methods this holds because the cached keys are
  re-rotated with the current length's frequencies (a cache of rotated keys, as HF keeps,
  would not match); with one layer the keys are the only length-dependent cached state."""
  assert sorted(STATIC + DYNAMIC) == sorted(rope_lib.names())
  model = _model(ROPES[name], n_layers=n_layers)
  pairs, _ = _cached_and_uncached(model)
  scale = max(np.abs(want).max() for _, want in pairs)
  assert scale > 1.0  # logits that vary, so the comparison means something
  for b, (got, want) in enumerate(pairs):
    assert got.shape == want.shape
    err = np.max(np.abs(got - want))
    assert err <= 1e-5 * scale, (name, b, err, scale)


@pytest.mark.parametrize("name", ["dynamic_yarn"])  # one is enough to pin the behaviour
def test_deep_cached_decoding_of_length_dependent_rope(name):
  """With several layers, cached decoding equals the forward pass while the frequencies stay
  fixed (up to the original length). Past it, the deeper layers' cached keys and values were
  computed from hidden states of the earlier frequencies, which only a full recomputation
  would refresh: the logits then differ (documented in `generate`), by less than the change
  itself would cause."""
  model = _model(ROPES[name], n_layers=2)
  pairs, prompt_lens = _cached_and_uncached(model)
  for (got, want), start in zip(pairs, prompt_lens):
    before = ORIG - start  # rows of `got` at positions < ORIG
    np.testing.assert_allclose(got[:before], want[:before], atol=2e-5)
    err = np.abs(got[before:] - want[before:]).max()
    assert 1e-4 < err < 0.5 * np.abs(want[before:]).max(), err


def _hf_pair(rope_parameters, seed=0):
  """A random small HF Llama (GQA, 2 layers) with weights scaled up so greedy decoding does not
  collapse onto one token, and the same weights as a llama_jax model."""
  import torch
  hf_cfg = hf.hf_config(rope_parameters, head_dim=16)
  hf_model = hf.hf_model(hf_cfg, seed=seed)
  with torch.no_grad():
    for name, p in hf_model.named_parameters():
      if "norm" not in name:
        p.mul_(4.0)
  cfg = ModelConfig.from_hf(hf_cfg.to_dict())
  params = weights.hf_to_params(cfg, hf.hf_state(hf_model).__getitem__)
  return hf_model, spec_lib.from_params(cfg, params)


@pytest.mark.parametrize("rope", [
    None,
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16,
     "rope_theta": 10000.0},
])
def test_greedy_continuation_equals_hf_generate(rope):
  import torch
  hf_model, model = _hf_pair(rope)
  prompt = np.random.RandomState(1).randint(3, 128, size=12)  # 12 + 20 tokens cross 16
  out = hf_model.generate(torch.as_tensor(prompt[None]), max_new_tokens=20, do_sample=False,
                          pad_token_id=0, eos_token_id=None, output_scores=True,
                          return_dict_in_generate=True)
  want = out.sequences[0, len(prompt):].tolist()
  scores = torch.stack(out.scores)[:, 0]
  top2 = scores.topk(2).values
  assert len(want) == 20 and len(set(want)) >= 8, want  # not degenerate
  assert float((top2[:, 0] - top2[:, 1]).min()) > 1e-3  # no near-ties to flip on rounding
  assert gen.generate(model, [prompt.tolist()], 20)[0] == want


# The generation tests below share one model, prompts and padded shapes, so they share compiles.
PROMPTS = [np.random.RandomState(2).randint(0, 96, n).tolist() for n in (5, 23, 11)]
NEW = 16


@pytest.mark.parametrize("name,self_extend", [("default", False), ("dynamic_yarn", False),
                                               ("default", True)])
def test_prefill_attends_to_the_prompt_alone_and_fills_the_same_cache(name, self_extend,
                                                                     monkeypatch):
  """`prefill=True` (what `generate` does) scores the prompt's own keys at offset 0 — the
  kernels training uses, with causal block skipping — instead of every slot of the cache, and
  gives the logits and cache of the general cached call (keys stored before rotation for a
  length-dependent method and for Self-Extend)."""
  extra = dict(self_extend_window=4, self_extend_group=2) if self_extend else {}
  model = _model(ROPES[name], **extra)
  padded = gen.pad_prompts([[5, 7, 9, 11, 13, 15, 17, 19, 21], [3, 4, 5]])
  tokens, positions, segment_ids = (jnp.asarray(a) for a in padded[:3])
  calls = []
  real = model_lib.attention_lib.dot_product_attention

  def spy(q, k, v, **kw):
    calls.append((q.shape[1], k.shape[1], kw["q_offset"]))
    return real(q, k, v, **kw)

  monkeypatch.setattr(model_lib.attention_lib, "dot_product_attention", spy)
  out = {}
  for prefill in (True, False):
    cache = model_lib.KVCache.init(model.cfg, 2, 40)
    logits, cache = model(tokens, positions, segment_ids, cache, prefill=prefill)
    out[prefill] = (np.asarray(logits), cache)
  assert calls[0] == (9, 9, 0) and calls[-1][:2] == (9, 40), calls
  (got, got_cache), (want, want_cache) = out[True], out[False]
  scale = np.abs(want).max()
  assert scale > 1.0
  assert np.max(np.abs(got - want)) <= 1e-5 * scale
  for a, b in zip(jax.tree.leaves(got_cache), jax.tree.leaves(want_cache)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  with pytest.raises(ValueError, match="prefill=True fills a KVCache"):
    model(tokens, positions, segment_ids, prefill=True)


@pytest.mark.parametrize("scan_layers", [True, False])
def test_a_per_layer_cache_and_presliced_layers_decode_as_the_stacked_cache(scan_layers):
  """The decode loop's form — `KVCache.per_layer()` and `layer_states()` sliced once — gives the
  logits and cache contents of the stacked cache, whatever the layer layout."""
  model = _model(ROPES["dynamic_yarn"], n_layers=3, scan_layers=scan_layers)
  padded = gen.pad_prompts([[5, 7, 9, 11, 13], [3, 4]])
  logits, cache = gen.prefill(model, padded, max_len=12)
  layers = model.layer_states()
  assert len(layers) == 3
  stacked, split = cache, cache.per_layer()
  assert isinstance(split.k, tuple) and split.k[1].shape == cache.k.shape[1:]
  assert split.max_len == stacked.max_len == 12
  lengths = padded.lengths
  for step in range(3):
    tokens = jnp.asarray([17 + step, 30 + step], jnp.int32)
    positions = jnp.asarray(lengths + step, jnp.int32)
    want, stacked = generate_lib.step_logits(model, tokens, positions, stacked)
    got, split = generate_lib.step_logits(model, tokens, positions, split, layers=layers)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  for i in range(3):
    np.testing.assert_allclose(np.asarray(split.k[i]), np.asarray(stacked.k[i]), atol=1e-6)
    np.testing.assert_allclose(np.asarray(split.v[i]), np.asarray(stacked.v[i]), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(split.positions), np.asarray(stacked.positions))


@pytest.fixture(scope="module")
def default_model():
  return _model(ROPES["default"], init_std=0.15)


def _alone(model, **kw):
  """Each prompt generated on its own (left-padded to 32 columns: one compilation for all)."""
  return [gen.generate(model, [p], NEW, pad_multiple=32, **kw)[0] for p in PROMPTS]


@pytest.mark.parametrize("name", ["default", "dynamic_yarn"])
def test_batched_prompts_equal_each_prompt_alone(name, default_model):
  model = default_model if name == "default" else _model(ROPES[name], init_std=0.15)
  alone = _alone(model)
  assert len({tuple(a) for a in alone}) == 3 and all(len(set(a)) > 3 for a in alone)
  assert gen.generate(model, PROMPTS, NEW) == alone


def test_eos_stops_a_row_and_the_decode_loop(default_model):
  free = _alone(default_model)
  eos = free[0][3]
  cut = free[0].index(eos)
  stopped = gen.generate(default_model, PROMPTS, NEW, eos_id=eos, pad_multiple=32)
  for row, out in zip(free, stopped):
    assert out == (row[:row.index(eos) + 1] if eos in row else row)
  assert any(eos not in row for row in free)  # a row that never stops keeps going

  # Once every row has ended the while loop stops: fewer steps than max_new_tokens.
  result = gen.generate_array(default_model, PROMPTS[:1], NEW, eos_id=eos, pad_multiple=32)
  assert result.steps == cut + 1 < NEW


def test_top_k_1_sampling_equals_greedy(default_model):
  greedy = _alone(default_model)
  for temperature, seed in ((1.0, 0), (0.3, 7), (2.0, 11)):  # one compilation: traced T
    assert _alone(default_model, temperature=temperature, top_k=1, seed=seed) == greedy


def _numpy_keep(logits, top_k, top_p):
  """bool[V]: the tokens a top-k then top-p (nucleus) filter keeps, written from the definition."""
  logits = np.asarray(logits, np.float64)
  keep = np.ones(logits.shape, bool)
  if 0 < top_k < len(logits):
    keep &= logits >= np.sort(logits)[::-1][top_k - 1]
  if top_p < 1.0:
    kept = np.where(keep)[0]
    p = np.exp(logits[kept] - logits[kept].max())
    p /= p.sum()
    order = kept[np.argsort(-p, kind="stable")]
    p_sorted = np.sort(p)[::-1]
    nucleus, total = [], 0.0
    for token, prob in zip(order, p_sorted):
      nucleus.append(token)
      total += prob
      if total >= top_p:
        break
    keep = np.zeros(logits.shape, bool)
    keep[nucleus] = True
  return keep


@pytest.mark.parametrize("top_k,top_p", [(0, 1.0), (5, 1.0), (1, 1.0), (0, 0.5), (0, 0.9),
                                         (8, 0.7), (3, 0.99), (50, 0.3)])
def test_filter_logits_matches_numpy(top_k, top_p):
  logits = np.random.RandomState(top_k + int(100 * top_p)).randn(6, 40).astype(np.float32) * 2
  got = np.asarray(gen.filter_logits(jnp.asarray(logits), top_k, top_p))
  for row, out in zip(logits, got):
    keep = _numpy_keep(row, top_k, top_p)
    np.testing.assert_array_equal(np.isfinite(out), keep)
    np.testing.assert_array_equal(out[keep], row[keep])


def test_samples_follow_the_filtered_distribution():
  logits = jnp.asarray(np.random.RandomState(5).randn(1, 16).astype(np.float32))
  sampler = gen.Sampler(temperature=0.8, top_k=8, top_p=0.85)
  keys = jax.random.split(jax.random.PRNGKey(0), 20000)
  draws = np.asarray(jax.vmap(lambda k: gen.sample(logits, k, sampler)[0])(keys))
  scaled = np.asarray(logits[0], np.float64) / 0.8
  keep = _numpy_keep(scaled, 8, 0.85)
  assert 1 < keep.sum() < 8
  assert set(np.unique(draws)) <= set(np.where(keep)[0])
  p = np.where(keep, np.exp(scaled - scaled.max()), 0.0)
  p /= p.sum()
  freq = np.bincount(draws, minlength=16) / len(draws)
  np.testing.assert_allclose(freq, p, atol=0.015)


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 5, 1.0), (1.3, 0, 0.6)])
def test_sampled_tokens_lie_in_the_filtered_set_and_follow_the_seed(temperature, top_k, top_p,
                                                                      default_model):
  model = default_model
  kw = dict(temperature=temperature, top_k=top_k, top_p=top_p, pad_multiple=32)
  prompt = PROMPTS[1]
  out = gen.generate(model, [prompt], NEW, seed=3, **kw)[0]
  assert gen.generate(model, [prompt], NEW, seed=3, **kw)[0] == out
  assert gen.generate(model, [prompt], NEW, seed=4, **kw)[0] != out
  assert out != _alone(model)[1]  # it really samples
  seq = np.array(prompt + out)
  logits = _forward(model, seq[None])[0]
  for i, token in enumerate(out):
    keep = _numpy_keep(logits[len(prompt) + i - 1] / temperature, top_k, top_p)
    assert keep[token], (i, token)


def test_bad_arguments_are_rejected_with_clear_messages():
  model = _model(ROPES["default"])
  with pytest.raises(ValueError, match="non-empty list"):
    gen.generate(model, [], 4)
  with pytest.raises(ValueError, match="prompt 1"):
    gen.generate(model, [[1, 2], []], 4)
  with pytest.raises(ValueError, match="outside the model's vocabulary"):
    gen.generate(model, [[1, 200]], 4)
  with pytest.raises(ValueError, match="top_p"):
    gen.generate(model, [[1, 2]], 4, temperature=1.0, top_p=0.0)
  with pytest.raises(ValueError, match="temperature"):
    gen.generate(model, [[1, 2]], 4, temperature=-1.0)
  with pytest.raises(ValueError, match="max_len=4 is too small"):
    gen.generate(model, [[1, 2, 3]], 4, max_len=4)
  assert gen.generate(model, [[1, 2], [3]], 0) == [[], []]


def test_cli_generates_from_a_converted_checkpoint(tmp_path, capsys):
  from absl import flags

  from llama_jax import convert
  from llama_jax.data import tokenizer as tokenizer_lib
  text = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 20
  tok = tokenizer_lib.train_tokenizer([text], 300, tmp_path / "tok.model")
  cfg = ModelConfig(vocab_size=320, d_model=32, n_layers=1, n_heads=2, ffn_dim=64,
                    norm_eps=1e-5, init_std=0.3)
  params = jax.tree.map(np.asarray, spec_lib.to_params(model_lib.init(cfg)))
  convert.save_converted(tmp_path / "ckpt", cfg, params)
  prompts = ["def add(a, b):", "class Point"]
  fv = flags.FlagValues()  # the CLI's own flags, parsed in-process
  gen.define_flags(fv)
  fv(["generate", f"--checkpoint={tmp_path / 'ckpt'}", f"--tokenizer={tok.path}",
      *(f"--prompt={p}" for p in prompts), "--max_new_tokens=8", "--temperature=0.8",
      "--top_k=20", "--seed=1"])
  gen.main(["generate"], fv)
  printed = capsys.readouterr().out
  # Each prompt is printed followed by its continuation, the same as the Python API gives.
  model = convert.load_model(tmp_path / "ckpt")
  ids = [tok.encode(p, bos=True) for p in prompts]
  outs = gen.generate(model, ids, 8, temperature=0.8, top_k=20, seed=1, eos_id=tok.eos_id)
  for p, prompt_ids, new in zip(prompts, ids, outs):
    expected = tok.decode(prompt_ids + [t for t in new if t != tok.eos_id and t < tok.vocab_size])
    assert expected.startswith(p) and len(expected) > len(p)
    assert expected in printed
