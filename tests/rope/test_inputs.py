"""Traced RoPE inputs: for every method, values as arrays equal the same values in the config,
bit for bit, under `jax.jit`; new values never recompile; the PI scale and offset against
float64 formulas; bad inputs are clear errors before any compilation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llama_jax import rope
from llama_jax.core.errors import ConfigError
from llama_jax.model import llama as model_lib
from llama_jax.model.config import ModelConfig
from llama_jax.rope import RopeConfig, RopeInputs
from llama_jax.rope import inputs as inputs_lib
from tests.references import rope_reference as ref

D = 32
HALF = D // 2
# One config per registered method; positions below go past every original length (64), so
# LongRoPE's long factors and the dynamic methods' growth are exercised too.
CONFIGS = {
    "default": RopeConfig("default", 1e4, max_position_embeddings=256),
    "linear": RopeConfig("linear", 1e4, factor=4.0, max_position_embeddings=256),
    "ntk": RopeConfig("ntk", 1e4, factor=4.0, max_position_embeddings=256),
    "dynamic": RopeConfig("dynamic", 1e4, factor=3.0, max_position_embeddings=64),
    "ntk_by_parts": RopeConfig("ntk_by_parts", 1e4, factor=4.0,
                               original_max_position_embeddings=64, max_position_embeddings=256),
    "yarn": RopeConfig("yarn", 1e4, factor=4.0, original_max_position_embeddings=64,
                       max_position_embeddings=256, attention_factor=1.3),
    "dynamic_yarn": RopeConfig("dynamic_yarn", 1e4, factor=2.0,
                               original_max_position_embeddings=64, max_position_embeddings=256),
    "llama3": RopeConfig("llama3", 5e5, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                         original_max_position_embeddings=64, max_position_embeddings=512),
    "longrope": RopeConfig("longrope", 1e4, short_factor=tuple(1 + np.arange(HALF) / HALF),
                           long_factor=tuple(1 + 3 * np.arange(HALF) / HALF),
                           original_max_position_embeddings=64, max_position_embeddings=256,
                           attention_factor=1.2),
}
POSITIONS = jnp.stack([jnp.arange(200), 3 * jnp.arange(200) + 7]).astype(jnp.int32)


def draw(field, rng, rows=2):
  if field in ("short_factor", "long_factor"):
    return rng.uniform(1.0, 40.0, size=(rows, HALF)).astype(np.float32)
  if field == "attention_factor":
    return rng.uniform(0.8, 1.5, size=rows).astype(np.float32)
  return rng.uniform(1.05, 40.0, size=rows).astype(np.float32)


def as_config_value(value):
  return tuple(float(v) for v in value) if np.ndim(value) else float(value)


@functools.cache
def static_fn(cfg: RopeConfig):
  return jax.jit(lambda p: rope.cos_sin(cfg, D, p))


@functools.cache
def traced_fn(cfg: RopeConfig):
  return jax.jit(lambda p, i: rope.cos_sin(cfg, D, p, inputs=i))


def assert_bitwise(got, want):
  for g, w in zip(got, want):
    np.testing.assert_array_equal(np.asarray(g).view(np.uint32), np.asarray(w).view(np.uint32))


def test_configs_cover_every_registered_method():
  assert sorted(CONFIGS) == rope.names()
  for name in rope.names():
    rope.validate(CONFIGS[name], D)


@pytest.mark.parametrize("rope_type", sorted(CONFIGS))
def test_traced_fields_equal_the_config_bit_for_bit(rope_type):
  """Each traced field: row r with the value as an array equals a config holding that value."""
  cfg = CONFIGS[rope_type]
  rng = np.random.RandomState(0)
  fn = traced_fn(cfg)
  for i, field in enumerate(rope.get(rope_type).traced):
    for _ in range(2):
      values = draw(field, rng)
      got = fn(POSITIONS, RopeInputs(**{field: jnp.asarray(values)}))
      for r in range(2):
        static = cfg.replace(**{field: as_config_value(values[r])})
        assert_bitwise([x[r] for x in got], [x[0] for x in static_fn(static)(POSITIONS[r:r + 1])])
    assert fn._cache_size() == i + 1, "a new value recompiled"  # one per traced field


@pytest.mark.parametrize("rope_type", sorted(CONFIGS))
def test_offset_equals_shifted_positions_bit_for_bit(rope_type):
  cfg = CONFIGS[rope_type]
  offsets = np.array([5, 301], np.int32)
  got = traced_fn(cfg)(POSITIONS, RopeInputs(offset=jnp.asarray(offsets)))
  want = static_fn(cfg)(POSITIONS + offsets[:, None])
  assert_bitwise(got, want)


@pytest.mark.parametrize("rope_type", sorted(CONFIGS))
def test_identity_inputs_change_nothing(rope_type):
  cfg = CONFIGS[rope_type]
  got = traced_fn(cfg)(POSITIONS, RopeInputs(scale=jnp.ones(2), offset=jnp.zeros(2, jnp.int32)))
  assert_bitwise(got, static_fn(cfg)(POSITIONS))


def test_scale_on_plain_rope_is_linear_scaling_bit_for_bit():
  rng = np.random.RandomState(1)
  fn = jax.jit(lambda p, i: rope.cos_sin(CONFIGS["default"], D, p, inputs=i))
  for _ in range(4):
    g = rng.uniform(1.0, 30.0, size=2).astype(np.float32)
    got = fn(POSITIONS, RopeInputs(scale=jnp.asarray(g)))
    for r in range(2):
      linear = RopeConfig("linear", 1e4, factor=float(g[r]), max_position_embeddings=256)
      assert_bitwise([x[r] for x in got], [x[0] for x in static_fn(linear)(POSITIONS[r:r + 1])])
  # Integer scales as E²-LLM draws them, shared by the batch: still one compilation.
  for g in (1.0, 2.0, 7.0):
    fn(POSITIONS, RopeInputs(scale=jnp.float32(g)))
  assert fn._cache_size() == 2  # per-row [2] and shared [] scales: two shapes


def test_scale_and_offset_match_float64_interpolation():
  """Angles ((m + t) / g)·θ_i (E²-LLM Eq. 5 without sinks), float64 from the formula."""
  positions = jnp.asarray([[0, 1, 5, 100, 4000, 16000]], jnp.int32)
  g, t = 5.0, 777
  cos, sin = rope.cos_sin(RopeConfig("default", 1e4), 64, positions,
                          inputs=RopeInputs(scale=jnp.float32(g), offset=jnp.int32(t)))
  ang = ((np.asarray(positions[0], np.float64) + t) / g)[:, None] * ref.theta(1e4, 64)[None]
  ang = np.concatenate([ang, ang], -1)
  assert cos.dtype == sin.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(cos[0]), np.cos(ang), atol=2e-4)
  np.testing.assert_allclose(np.asarray(sin[0]), np.sin(ang), atol=2e-4)


# ------------------------------------------------------------------------------ the model
MODEL = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=HALF * 2,
             ffn_dim=64, norm_eps=1e-5, max_position_embeddings=256, init_std=0.1)


@functools.partial(jax.jit, static_argnums=0)
def _logits(graphdef, state, tokens, positions, rope_inputs):
  return nnx.merge(graphdef, state)(tokens, positions, rope_inputs=rope_inputs)


def logits(model, tokens, positions, rope_inputs=None):
  return np.asarray(_logits(*nnx.split(model), tokens, positions, rope_inputs))


@pytest.mark.parametrize("rope_type,field", [
    ("linear", "factor"), ("longrope", "long_factor"), ("longrope", "attention_factor"),
    ("yarn", "attention_factor"), ("default", "scale")])
def test_model_logits_with_traced_values_equal_the_config(rope_type, field):
  """The whole forward pass: a model given the value as an array equals the model whose
  config holds it (for `scale` on plain RoPE: the `linear` model), bit for bit. (Shared values:
  per-row ones are checked above; the matmuls' results depend on the batch size.)"""
  cfg = CONFIGS[rope_type].replace(max_position_embeddings=None)
  rng = np.random.RandomState(2)
  tokens = jnp.asarray(rng.randint(0, 64, (2, 96)), jnp.int32)
  positions = jnp.stack([jnp.arange(96), jnp.arange(96) + 100]).astype(jnp.int32)
  model = model_lib.init(ModelConfig(rope=cfg, **MODEL), seed=0)
  value = draw("factor" if field == "scale" else field, rng, rows=1)[0]
  got = logits(model, tokens, positions, RopeInputs(**{field: jnp.asarray(value)}))
  if field == "scale":
    static = RopeConfig("linear", 1e4, factor=float(value))
  else:
    static = cfg.replace(**{field: as_config_value(value)})
  other = nnx.merge(nnx.graphdef(model_lib.init(ModelConfig(rope=static, **MODEL))),
                    nnx.state(model))
  np.testing.assert_array_equal(got, logits(other, tokens, positions))
  assert not np.array_equal(got, logits(model, tokens, positions))  # the value took effect


# ------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("inputs,match", [
    (RopeInputs(long_factor=np.ones(HALF + 3, np.float32)),
     r"long_factor has shape \(19,\) \(19 entries\); rope_type='longrope' with head_dim=32 "
     r"needs head_dim/2 = 16"),
    (RopeInputs(long_factor=np.ones((3, HALF), np.float32)), r"3 rows for a batch of 2"),
    (RopeInputs(factor=np.float32(2.0)), r"'factor' is not traced by rope_type='longrope'; it "
     r"traces \['scale', 'offset', 'short_factor', 'long_factor', 'attention_factor'\]"),
    (RopeInputs(scale=np.zeros(2, np.float32)), r"scale has a value <= 0"),
    (RopeInputs(attention_factor=np.float32(np.nan)), r"attention_factor has a value <= 0 or "
     r"not finite"),
    (RopeInputs(offset=np.array([1.5, 2.0])), r"offset=\[1\.5, 2\.0\]; allowed: integers >= 0"),
    (RopeInputs(scale=np.ones((2, 2), np.float32)), r"scale has shape \(2, 2\)"),
])
def test_bad_inputs_are_clear_errors_before_compiling(inputs, match):
  cfg = CONFIGS["longrope"]
  with pytest.raises(ConfigError, match=match):
    inputs_lib.check(inputs, cfg, D, batch=2)
  fn = jax.jit(lambda p, i: rope.cos_sin(cfg, D, p, inputs=i))
  # Shapes are checked while tracing too, i.e. before XLA compiles anything.
  if "value" not in match and "offset=" not in match:
    with pytest.raises(ConfigError, match=match):
      fn.lower(POSITIONS, jax.tree.map(jnp.asarray, inputs))


def test_e2llm_inference_scale_and_window():
  assert [inputs_lib.scale_for_length(n, 4096) for n in (1, 4096, 4097, 16384, 16385)] == [
      1, 1, 2, 4, 5]
  np.testing.assert_array_equal(inputs_lib.window_scales([100, 300], 128), [1, 3])
  cfg = RopeConfig("default", 1e4, max_position_embeddings=4096)
  inputs_lib.check_window(4096, cfg)
  with pytest.raises(ConfigError, match=r"e2llm_window=8192 exceeds the model's "
                     r"max_position_embeddings=4096: positions scaled into the window reach "
                     r"8191, past what the model can represent"):
    inputs_lib.check_window(8192, cfg)
  with pytest.raises(ConfigError, match=r"e2llm_window=-1; allowed: an integer >= 0"):
    inputs_lib.check_window(-1, cfg)
