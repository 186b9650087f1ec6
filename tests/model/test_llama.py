"""The model against HF `LlamaForCausalLM` (CPU, float32) and its structural properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax.interop import hf_layout as weights
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig, preset
from llama_jax.rope import RopeConfig
from tests.references import hf_reference as hf

ORIG = 32  # original_max_position_embeddings of the small test models
SEQ = 80  # evaluated length: beyond ORIG and beyond max_position_embeddings=64

HF_ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.5},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIG},
    "yarn_betas_truncate": {"rope_type": "yarn", "factor": 8.0,
                            "original_max_position_embeddings": ORIG, "beta_fast": 16.0,
                            "beta_slow": 2.0, "truncate": False},
    "yarn_mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": ORIG,
                    "mscale": 1.0, "mscale_all_dim": 0.5},
    "yarn_attention_factor": {"rope_type": "yarn", "factor": 4.0,
                              "original_max_position_embeddings": ORIG, "attention_factor": 1.3},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": ORIG},
    "longrope": {"rope_type": "longrope", "original_max_position_embeddings": ORIG,
                 "short_factor": [1.0 + 0.05 * i for i in range(8)],
                 "long_factor": [1.0 + 1.5 * i for i in range(8)]},
}


def convert(hf_model, hf_cfg, **overrides):
  cfg = ModelConfig.from_hf(hf_cfg.to_dict(), **overrides)
  state = hf.hf_state(hf_model)
  return spec_lib.from_params(cfg, weights.hf_to_params(cfg, state.__getitem__))


@pytest.mark.parametrize("name", list(HF_ROPES))
def test_logits_match_hf_for_every_rope_type(name):
  params = HF_ROPES[name]
  if params is not None:
    params = dict(params, rope_theta=10000.0)
  hf_cfg = hf.hf_config(params, head_dim=16)
  tokens = np.random.RandomState(0).randint(0, 128, size=(2, SEQ))
  lengths = [SEQ, 24] if name == "longrope" else [SEQ]  # both factor sets
  for length in lengths:
    hf_model = hf.hf_model(hf_cfg)  # fresh: HF's dynamic rope keeps state between calls
    want = hf.hf_logits(hf_model, tokens[:, :length])
    got = np.asarray(convert(hf_model, hf_cfg)(jnp.asarray(tokens[:, :length])))
    assert np.max(np.abs(got - want)) <= 1e-4, (name, length, np.max(np.abs(got - want)))


@pytest.mark.parametrize("overrides", [
    dict(tie_word_embeddings=True),
    dict(head_dim=24, num_attention_heads=4, num_key_value_heads=1),  # head_dim != d/H, MQA
    dict(num_key_value_heads=4, rope_theta=500000.0, rms_norm_eps=1e-6),
])
def test_logits_match_hf_for_other_shapes(overrides):
  hf_cfg = hf.hf_config(None, **overrides)
  hf_model = hf.hf_model(hf_cfg)
  tokens = np.random.RandomState(1).randint(0, 128, size=(2, 40))
  got = np.asarray(convert(hf_model, hf_cfg)(jnp.asarray(tokens)))
  np.testing.assert_allclose(got, hf.hf_logits(hf_model, tokens), atol=1e-4, rtol=0)


def _tiny(**kw):
  return preset("tiny", **kw)


def _logits(cfg, params, tokens, **kw):
  return np.asarray(spec_lib.from_params(cfg, params)(tokens, **kw))


@pytest.fixture(scope="module")
def base():
  cfg = _tiny(max_position_embeddings=32)
  params = spec_lib.to_params(model_lib.init(cfg, seed=3))
  # Bigger norm scales make small changes visible in the logits.
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 256, (1, 48)))
  return cfg, params, tokens


ROPE_FIELD_CASES = [
    # (base rope, field, new value): each field must change the logits at length 48 > 32.
    (RopeConfig("default"), "rope_theta", 500.0),
    (RopeConfig("linear", factor=2.0), "factor", 3.0),
    (RopeConfig("ntk", factor=2.0), "factor", 5.0),
    (RopeConfig("dynamic", factor=2.0), "factor", 6.0),
    (RopeConfig("dynamic", factor=2.0), "max_position_embeddings", 40),
    (RopeConfig("ntk_by_parts", factor=4.0, original_max_position_embeddings=16), "factor", 8.0),
    (RopeConfig("ntk_by_parts", factor=4.0, original_max_position_embeddings=16),
     "original_max_position_embeddings", 24),
    (RopeConfig("ntk_by_parts", factor=4.0, original_max_position_embeddings=1024), "beta_fast",
     8.0),
    (RopeConfig("ntk_by_parts", factor=4.0, original_max_position_embeddings=16), "beta_slow", 0.5),
    (RopeConfig("ntk_by_parts", factor=4.0, original_max_position_embeddings=1024), "truncate",
     False),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16), "factor", 8.0),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16),
     "original_max_position_embeddings", 24),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=1024), "beta_fast", 8.0),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16), "beta_slow", 0.5),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=1024), "truncate", False),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16), "attention_factor", 1.7),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16, mscale_all_dim=1.0),
     "mscale", 2.0),
    (RopeConfig("yarn", factor=4.0, original_max_position_embeddings=16, mscale=1.0),
     "mscale_all_dim", 0.5),
    (RopeConfig("dynamic_yarn", original_max_position_embeddings=16), "factor", 6.0),
    (RopeConfig("dynamic_yarn", original_max_position_embeddings=16),
     "original_max_position_embeddings", 24),
    (RopeConfig("dynamic_yarn", factor=4.0, original_max_position_embeddings=1024), "beta_fast",
     8.0),
    (RopeConfig("dynamic_yarn", original_max_position_embeddings=16), "beta_slow", 0.5),
    (RopeConfig("dynamic_yarn", original_max_position_embeddings=16), "mscale", 2.0),
    (RopeConfig("dynamic_yarn", factor=4.0, original_max_position_embeddings=1024), "truncate",
     False),
    (RopeConfig("llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=16), "factor", 8.0),
    (RopeConfig("llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=16), "low_freq_factor", 2.0),
    (RopeConfig("llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=16), "high_freq_factor", 8.0),
    (RopeConfig("llama3", factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=16), "original_max_position_embeddings", 32),
    (RopeConfig("longrope", short_factor=(1.0,) * 8, long_factor=(2.0,) * 8,
                original_max_position_embeddings=16), "long_factor", (3.0,) * 8),
    (RopeConfig("longrope", short_factor=(1.0,) * 8, long_factor=(2.0,) * 8,
                original_max_position_embeddings=64), "short_factor", (1.5,) * 8),
    (RopeConfig("longrope", short_factor=(1.0,) * 8, long_factor=(2.0,) * 8,
                original_max_position_embeddings=16), "original_max_position_embeddings", 64),
    (RopeConfig("longrope", short_factor=(1.0,) * 8, long_factor=(2.0,) * 8,
                original_max_position_embeddings=16), "factor", 8.0),
    (RopeConfig("longrope", short_factor=(1.0,) * 8, long_factor=(2.0,) * 8,
                original_max_position_embeddings=16), "attention_factor", 1.3),
]


@pytest.mark.parametrize("rope,field,value", ROPE_FIELD_CASES,
                         ids=[f"{r.rope_type}.{f}" for r, f, _ in ROPE_FIELD_CASES])
def test_every_rope_field_reaches_the_logits(base, rope, field, value):
  cfg, params, tokens = base
  cfg = cfg.replace(rope=rope.replace(max_position_embeddings=None))
  before = _logits(cfg, params, tokens)
  changed = cfg.rope.replace(**{field: value})
  if field == "max_position_embeddings":
    after = _logits(cfg.replace(max_position_embeddings=value), params, tokens)
  else:
    after = _logits(cfg.replace(rope=changed), params, tokens)
  assert np.max(np.abs(after - before)) > 1e-4, (rope.rope_type, field)


def test_norm_eps_reaches_the_logits(base):
  cfg, params, tokens = base
  assert np.max(np.abs(_logits(cfg.replace(norm_eps=0.5), params, tokens) -
                       _logits(cfg, params, tokens))) > 1e-3


@pytest.mark.parametrize("field,value,path,axis", [
    ("n_kv_heads", 1, ("layers", "attention", "k"), 2),
    ("n_kv_heads", 4, ("layers", "attention", "v"), 2),
    ("head_dim", 24, ("layers", "attention", "q"), 3),
    ("ffn_dim", 96, ("layers", "ffn", "gate"), 2),
    ("n_layers", 3, ("layers", "ffn", "up"), 0),
    ("vocab_size", 300, ("embed",), 0),
])
def test_structural_fields_shape_the_parameters_and_logits(field, value, path, axis):
  cfg = _tiny(**{field: value})
  params = spec_lib.to_params(model_lib.init(cfg))
  leaf = params
  for key in path:
    leaf = leaf[key]
  assert leaf.shape[axis] == value
  logits = spec_lib.from_params(cfg, params)(jnp.zeros((1, 5), jnp.int32))
  assert logits.shape == (1, 5, cfg.vocab_size) and np.all(np.isfinite(logits))


def test_tied_embeddings_have_no_lm_head():
  params = spec_lib.to_params(model_lib.init(_tiny(tie_embeddings=True)))
  assert "lm_head" not in params


def test_causal_future_tokens_do_not_change_the_past(base):
  cfg, params, tokens = base
  other = tokens.at[:, 30:].set((tokens[:, 30:] + 7) % 256)
  a, b = _logits(cfg, params, tokens), _logits(cfg, params, other)
  np.testing.assert_array_equal(a[:, :30], b[:, :30])
  assert np.max(np.abs(a[:, 30:] - b[:, 30:])) > 1e-3


def test_packed_documents_do_not_see_each_other(base):
  cfg, params, tokens = base
  doc_a, doc_b = tokens[:, :20], tokens[:, 20:48]
  packed_pos = jnp.concatenate([jnp.arange(20), jnp.arange(28)])[None]
  seg = jnp.concatenate([jnp.full((20,), 1), jnp.full((28,), 2)])[None]
  packed = _logits(cfg, params, tokens, positions=packed_pos, segment_ids=seg)
  np.testing.assert_allclose(packed[:, :20], _logits(cfg, params, doc_a), atol=1e-5)
  np.testing.assert_allclose(packed[:, 20:], _logits(cfg, params, doc_b), atol=1e-5)


def test_scan_and_unrolled_layers_agree(base):
  cfg, params, tokens = base
  np.testing.assert_allclose(_logits(cfg.replace(scan_layers=False), params, tokens),
                             _logits(cfg, params, tokens), atol=1e-5)


def test_bfloat16_compute_is_close_and_keeps_float32_logits(base):
  cfg, params, tokens = base
  lo = spec_lib.from_params(cfg.replace(dtype="bfloat16"), params)(tokens)
  assert lo.dtype == jnp.float32
  hi = _logits(cfg, params, tokens)
  assert np.max(np.abs(np.asarray(lo) - hi)) < 0.1 * np.max(np.abs(hi))


def test_cached_decoding_matches_full_forward(base):
  cfg, params, tokens = base
  m = spec_lib.from_params(cfg, params)
  full = np.asarray(m(tokens))
  cache = model_lib.KVCache.init(cfg, 1, 64)
  out, cache = m(tokens[:, :40], cache=cache)
  steps = [np.asarray(out)]
  for t in range(40, 48):
    out, cache = m(tokens[:, t:t + 1], cache=cache)
    steps.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=1e-5)


def test_from_params_rejects_a_mismatched_tree():
  cfg = _tiny()
  params = spec_lib.to_params(model_lib.init(cfg))
  params["layers"]["attention"]["q"] = params["layers"]["attention"]["q"][:, :, :2]
  with pytest.raises(ValueError, match=r"parameter layers/attention/q has shape"):
    spec_lib.from_params(cfg, params)
  del params["norm"]
  with pytest.raises(ValueError, match="missing"):
    spec_lib.from_params(cfg, params)


def test_parameters_carry_logical_axes():
  _, state = __import__("flax").nnx.split(spec_lib.abstract(_tiny()))
  leaves = jax.tree.leaves(state, is_leaf=lambda x: hasattr(x, "get_metadata"))
  for leaf in leaves:
    axes = leaf.get_metadata()["logical_axes"]
    assert len(axes) == len(leaf.shape), (axes, leaf.shape)


def test_token_ids_as_lists_and_out_of_vocabulary_ids_at_the_api_boundary():
  from llama_jax.core.errors import DataError
  cfg = _tiny()
  model = model_lib.init(cfg)
  ids = [[1, 45, 99], [3, 4, 5]]
  from_list = np.asarray(model(ids))  # a Python list, as the README's quick tour writes it
  np.testing.assert_array_equal(from_list, np.asarray(model(jnp.asarray(ids, jnp.int32))))
  assert from_list.shape == (2, 3, cfg.vocab_size)
  for bad in ([[1, cfg.vocab_size]], np.array([[-1, 2]]), jnp.asarray([[1, cfg.vocab_size + 7]])):
    with pytest.raises(DataError, match=r"outside the model's vocabulary \[0, "
                       f"{cfg.vocab_size}\\)"):
      model(bad)
  with pytest.raises(DataError, match=r"must be \[batch, seq\].*\[\[1, 450, 4996\]\]"):
    model([1, 2, 3])
  with pytest.raises(DataError, match="must be integers"):
    model([[0.5, 1.0]])
  # Inside jit only shapes and dtypes can be checked; traced ids pass through.
  jitted = jax.jit(lambda graph_state, t: __import__("flax").nnx.merge(*graph_state)(t))
  split = __import__("flax").nnx.split(model)
  np.testing.assert_allclose(np.asarray(jitted(split, jnp.asarray(ids))), from_list, atol=1e-5)
