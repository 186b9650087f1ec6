"""Self-Extend: the kernels and the model against a float64 NumPy reference of the method.

The reference (`tests/references/self_extend_reference.py`) is written from the method's
definition: two score matrices, merged by the neighbour window, one softmax. The kernels are
checked against it directly (given rotated operands), the model end to end (positions, the
grouped rotation and the merge) on a one-layer LLaMA; then the invariants: G = 1 and W >= T are
plain RoPE, cached decoding equals the uncached forward, and kernels that cannot do it refuse
by name.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import attention
from llama_jax.attention import chunked, self_extend, xla
from llama_jax.core.errors import ConfigError
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from tests.references import rope_reference
from tests.references import self_extend_reference as ref

KERNELS = ["xla", "chunked"]


def _kernel(name):
  if name == "chunked":
    return lambda *a, **kw: chunked.attention(*a, block_size=4, **kw)  # several blocks
  return xla.attention


def _rotated_operands(b, t, h, k, d, window, group, seed=0):
  """Random q/k/v, their plain and grouped rotations (float64), positions 0..T-1."""
  rng = np.random.RandomState(seed)
  q, kk, v = rng.randn(b, t, h, d), rng.randn(b, t, k, d), rng.randn(b, t, k, d)
  inv = rope_reference.theta(10000.0, d)
  pos = np.arange(t)

  def rot(x, p):
    return np.stack([ref.rotate(x[i], p, inv) for i in range(b)])

  qn, kn = rot(q, pos), rot(kk, pos)
  qg, kg = rot(q, pos // group + window - window // group), rot(kk, pos // group)
  want = np.stack([ref.attention(q[i], kk[i], v[i], pos, inv, window, group) for i in range(b)])
  qn, kn, v, qg, kg = (jnp.asarray(x, jnp.float32) for x in (qn, kn, v, qg, kg))
  return (qn, kn, v, self_extend.Grouped(qg, kg, window)), want


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("window,group", [(4, 2), (6, 3), (3, 1)])
def test_kernels_match_the_float64_two_score_merge(name, window, group):
  (q, k, v, grouped), want = _rotated_operands(2, 13, 4, 2, 8, window, group)
  got = jax.jit(lambda q, k, v, g: _kernel(name)(q, k, v, grouped=g),
                static_argnums=())(q, k, v, grouped)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=0)


def test_chunked_gradients_match_the_reference_kernel():
  """The chunked backward splits dS between the neighbour and grouped operands correctly."""
  (q, k, v, grouped), _ = _rotated_operands(1, 11, 4, 2, 8, 4, 2, seed=1)
  segs = jnp.asarray([[1] * 6 + [2] * 5], jnp.int32)

  def loss(fn):
    def f(q, k, v, gq, gk):
      out = fn(q, k, v, grouped=self_extend.Grouped(gq, gk, 4), q_segment_ids=segs,
               kv_segment_ids=segs)
      return jnp.sum(jnp.sin(out) * (1 + jnp.arange(q.shape[-1]) / 8))
    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2, 3, 4)))

  args = (q, k, v, grouped.q, grouped.k)
  (want_v, want_g), (got_v, got_g) = loss(xla.attention)(*args), loss(_kernel("chunked"))(*args)
  np.testing.assert_allclose(got_v, want_v, rtol=1e-5)
  for name, a, b in zip(["q", "k", "v", "grouped q", "grouped k"], got_g, want_g):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=5e-5, rtol=0,
                               err_msg=f"d{name}")


# ------------------------------------------------------------------------------ model level
def _model(window=None, group=None, attn="xla", n_layers=1, **kw):
  cfg = preset("tiny", n_layers=n_layers, attention=attn, self_extend_window=window,
               self_extend_group=group, attention_block_size=8, **kw)
  return cfg


@pytest.fixture(scope="module")
def one_layer():
  cfg = _model()
  params = spec_lib.to_params(model_lib.init(cfg, seed=3))
  # Norm scales away from 1 so a wrong norm cannot hide; larger q/k weights so the scores (and
  # with them the positions) matter.
  def adjust(path, x):
    name = jax.tree_util.keystr(path)
    if "norm" in name:
      return x + 0.1 * np.random.RandomState(0).randn(*x.shape).astype(np.float32)
    return x * 8 if "'q'" in name or "'k'" in name else x
  params = jax.tree_util.tree_map_with_path(adjust, params)
  tokens = np.random.RandomState(2).randint(0, 256, (1, 40))
  return cfg, params, tokens


@pytest.mark.parametrize("attn", KERNELS)
def test_model_matches_the_float64_reference(one_layer, attn):
  cfg, params, tokens = one_layer
  window, group = 8, 4
  got = spec_lib.from_params(cfg.replace(self_extend_window=window, self_extend_group=group,
                                         attention=attn), params)(jnp.asarray(tokens))
  inv = rope_reference.theta(cfg.rope.rope_theta, cfg.head_dim)
  want = ref.llama_one_layer(params, tokens[0], np.arange(40), inv, cfg.norm_eps, window, group)
  np.testing.assert_allclose(np.asarray(got[0]), want, atol=2e-4, rtol=0)
  # ... and Self-Extend really changed the result (the grouped scores were used).
  plain = ref.llama_one_layer(params, tokens[0], np.arange(40), inv, cfg.norm_eps)
  assert np.max(np.abs(want - plain)) > 1e-2


@pytest.mark.parametrize("attn", KERNELS)
@pytest.mark.parametrize("window,group", [(8, 1), (40, 4), (64, 8)])
def test_group_one_or_window_past_the_length_is_plain_rope(one_layer, attn, window, group):
  cfg, params, tokens = one_layer
  plain = spec_lib.from_params(cfg.replace(attention=attn), params)(jnp.asarray(tokens))
  extended = spec_lib.from_params(
      cfg.replace(attention=attn, self_extend_window=window, self_extend_group=group),
      params)(jnp.asarray(tokens))
  np.testing.assert_allclose(np.asarray(extended), np.asarray(plain), atol=1e-6, rtol=0)


@pytest.mark.parametrize("attn", KERNELS)
def test_cached_decoding_equals_the_uncached_forward(attn):
  cfg = _model(8, 2, attn, n_layers=2)
  m = model_lib.init(cfg, seed=1)
  tokens = jnp.asarray(np.random.RandomState(4).randint(0, 256, (2, 30)))
  full = np.asarray(m(tokens))
  cache = model_lib.KVCache.init(cfg, 2, 32)
  out, cache = m(tokens[:, :20], cache=cache)  # the prompt already spans several groups
  steps = [np.asarray(out)]
  for t in range(20, 30):
    out, cache = m(tokens[:, t:t + 1], cache=cache)
    steps.append(np.asarray(out))
  np.testing.assert_allclose(np.concatenate(steps, 1), full, atol=2e-5, rtol=0)


# ------------------------------------------------------------------------------ refusals
@pytest.mark.parametrize("attn", ["xla_blocked", "cudnn", "splash"])
def test_kernels_without_self_extend_are_refused_naming_those_with_it(attn):
  with pytest.raises(ValueError, match=rf"model.attention='{attn}' cannot run Self-Extend.*"
                                       r"\['chunked', 'xla', 'auto'\]"):
    _model(8, 2, attn)


def test_dispatch_refuses_grouped_operands_for_a_kernel_without_self_extend():
  (q, k, v, grouped), _ = _rotated_operands(1, 5, 2, 2, 8, 2, 2)
  with pytest.raises(ConfigError, match="kernels that can"):
    attention.dot_product_attention(q, k, v, impl="xla_blocked", grouped=grouped)


@pytest.mark.parametrize("window,group,match", [
    (8, None, "set both"), (None, 2, "set both"), (6, 4, "must be a multiple"),
    (0, 1, "positive integer"), (8, 2.0, "positive integer")])
def test_bad_settings_are_named(window, group, match):
  with pytest.raises(ValueError, match=match):
    _model(window, group)


@pytest.mark.parametrize("kw,want", [({}, "xla"), ({"decoding": True}, "xla"),
                                     ({"seq_len": 4096}, "chunked")])
def test_auto_picks_a_kernel_that_implements_it(kw, want):
  assert attention.resolve("auto", self_extend=True, **kw) == want
