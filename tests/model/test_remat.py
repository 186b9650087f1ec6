"""Rematerialisation policies and layer scanning change memory, never the numbers.

Every `model.remat` policy, with layers scanned or unrolled, must give the loss and gradients
of the plain model; and each named policy must save exactly the activations it names (checked
by the size of the residuals the backward pass keeps, against the tensor shapes).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax.model import llama as model_lib
from llama_jax.model import loss as loss_lib
from llama_jax.model import remat
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset

REMAT_POLICIES = remat.names()

B, T = 2, 24


@pytest.fixture(scope="module")
def setup():
  cfg = preset("tiny", n_layers=3)
  params = spec_lib.to_params(model_lib.init(cfg, seed=0))
  rng = np.random.RandomState(0)
  tokens = jnp.asarray(rng.randint(0, cfg.vocab_size, size=(B, T)))
  segments = jnp.asarray(np.repeat([[1] * 10 + [2] * 14], B, axis=0))
  return cfg, params, tokens, segments


def _loss_fn(cfg, tokens, segments):
  def loss(params):
    m = spec_lib.from_params(cfg, params)
    hidden, _ = m.features(tokens[:, :-1], segment_ids=segments[:, :-1])
    total, count = loss_lib.cross_entropy(hidden, m.head(), tokens[:, 1:],
                                          jnp.ones((B, T - 1)))
    return total / count
  return loss


def _value_and_grad(cfg, setup):
  _, params, tokens, segments = setup
  return jax.jit(jax.value_and_grad(_loss_fn(cfg, tokens, segments)))(params)


@pytest.fixture(scope="module")
def reference(setup):
  cfg = setup[0].replace(remat="none", scan_layers=True)
  return _value_and_grad(cfg, setup)


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "unrolled"])
@pytest.mark.parametrize("policy", REMAT_POLICIES)
def test_policy_gives_the_same_loss_and_gradients(setup, reference, policy, scan):
  want_loss, want_grads = reference
  loss, grads = _value_and_grad(setup[0].replace(remat=policy, scan_layers=scan), setup)
  np.testing.assert_allclose(float(loss), float(want_loss), rtol=1e-6)
  flat_want = jax.tree_util.tree_flatten_with_path(want_grads)[0]
  flat_got = jax.tree.leaves(grads)
  assert len(flat_got) == len(flat_want)
  for (path, want), got in zip(flat_want, flat_got):
    scale = float(np.max(np.abs(want)))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5 * scale, rtol=0,
                               err_msg=f"{policy} scan={scan} {jax.tree_util.keystr(path)}")


def test_full_remat_with_chunked_attention_gives_the_same_gradients(setup, reference):
  cfg = setup[0].replace(remat="full", attention="chunked", attention_block_size=8)
  loss, grads = _value_and_grad(cfg, setup)
  np.testing.assert_allclose(float(loss), float(reference[0]), rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), atol=1e-5 * float(np.max(np.abs(b)))), grads, reference[1])


def _residual_bytes(cfg, setup):
  """Bytes the backward pass keeps from the forward (the leaves of the VJP closure)."""
  _, params, tokens, segments = setup
  _, vjp = jax.vjp(_loss_fn(cfg, tokens, segments), params)
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp))


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "unrolled"])
def test_each_policy_saves_exactly_what_it_names(setup, scan):
  cfg = setup[0].replace(scan_layers=scan)
  size = {p: _residual_bytes(cfg.replace(remat=p), setup) for p in REMAT_POLICIES}
  per_token = cfg.n_layers * B * (T - 1) * 4  # float32 activations of every layer
  qkv = per_token * (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
  assert size["save_qkv"] - size["full"] == qkv
  assert size["save_attention"] - size["save_qkv"] == per_token * cfg.n_heads * cfg.head_dim
  assert size["minimal"] - size["save_attention"] == per_token * 2 * cfg.ffn_dim  # gate, up
  assert size["full"] < size["save_dots"] < size["none"]
  assert size["minimal"] < size["none"]
