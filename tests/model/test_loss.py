"""Chunked cross-entropy against a float64 NumPy log-softmax, values and gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax.model import loss


def numpy_nll_grads(hidden, head, targets):
  """float64 gradients of Σ NLL: dlogits = softmax - onehot, then the two matmul transposes."""
  h64, w64 = hidden.astype(np.float64), head.astype(np.float64)
  logits = np.einsum("btd,vd->btv", h64, w64)
  probs = np.exp(logits - logits.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  dlogits = probs - np.eye(head.shape[0])[targets]
  return np.einsum("btv,vd->btd", dlogits, w64), np.einsum("btv,btd->vd", dlogits, h64)


def numpy_nll(hidden, head, targets):
  logits = np.einsum("btd,vd->btv", hidden.astype(np.float64), head.astype(np.float64))
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return -np.take_along_axis(logp, targets[..., None], -1)[..., 0]


@pytest.mark.parametrize("t,chunk", [(37, 8), (32, 8), (16, 64), (20, 0)])
def test_token_nll_matches_numpy(t, chunk):
  rng = np.random.RandomState(0)
  hidden = rng.randn(2, t, 12).astype(np.float32)
  head = (3 * rng.randn(50, 12)).astype(np.float32)
  targets = rng.randint(0, 50, (2, t))
  got = loss.token_nll(jnp.asarray(hidden), jnp.asarray(head), jnp.asarray(targets), chunk)
  np.testing.assert_allclose(np.asarray(got), numpy_nll(hidden, head, targets), rtol=2e-5,
                             atol=2e-5)


def test_masked_sum_and_gradients_match_unchunked():
  rng = np.random.RandomState(1)
  hidden = jnp.asarray(rng.randn(2, 33, 8), jnp.float32)
  head = jnp.asarray(rng.randn(40, 8), jnp.float32)
  targets = jnp.asarray(rng.randint(0, 40, (2, 33)))
  mask = jnp.asarray(rng.rand(2, 33) > 0.3)

  def mean_loss(h, w, chunk):
    total, count = loss.cross_entropy(h, w, targets, mask, chunk)
    return total / count

  want = numpy_nll(np.asarray(hidden), np.asarray(head), np.asarray(targets))
  want = (want * np.asarray(mask)).sum() / np.asarray(mask).sum()
  assert float(mean_loss(hidden, head, 8)) == pytest.approx(want, rel=1e-5)
  g_chunked = jax.grad(mean_loss, argnums=(0, 1))(hidden, head, 8)
  g_full = jax.grad(mean_loss, argnums=(0, 1))(hidden, head, 0)
  for a, b in zip(g_chunked, g_full):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_chunked_loss_never_materialises_full_logits():
  hidden = jax.ShapeDtypeStruct((1, 8192, 64), jnp.float32)
  head = jax.ShapeDtypeStruct((8192, 64), jnp.float32)
  targets = jax.ShapeDtypeStruct((1, 8192), jnp.int32)

  def temp_bytes(chunk):
    f = jax.jit(jax.grad(lambda h, w, y: loss.token_nll(h, w, y, chunk).sum(), argnums=(0, 1)))
    return f.lower(hidden, head, targets).compile().memory_analysis().temp_size_in_bytes

  full_logits = 8192 * 8192 * 4
  assert temp_bytes(512) < full_logits / 4 < temp_bytes(0)


@pytest.mark.parametrize("vocab_chunk,chunk", [(16, 0), (7, 8), (50, 0), (64, 8)])
def test_vocabulary_chunks_give_the_same_values_and_gradients(vocab_chunk, chunk):
  """Logits formed in vocabulary pieces (combined log-sum-exp, target picked from its piece):
  values and gradients against the float64 reference; 50 entries in pieces of 7 leave a ragged
  last piece."""
  rng = np.random.RandomState(2)
  hidden = rng.randn(2, 19, 12).astype(np.float32)
  head = (3 * rng.randn(50, 12)).astype(np.float32)
  targets = rng.randint(0, 50, (2, 19))
  targets[0, :3] = [0, 49, 7]  # first and last entries, and a piece boundary
  args = (jnp.asarray(hidden), jnp.asarray(head), jnp.asarray(targets))
  got = loss.token_nll(*args, chunk, vocab_chunk)
  np.testing.assert_allclose(np.asarray(got), numpy_nll(hidden, head, targets), rtol=2e-5,
                             atol=2e-5)
  grad = lambda v: jax.grad(lambda h, w: loss.token_nll(h, w, args[2], chunk, v).sum(),
                            argnums=(0, 1))(*args[:2])
  for a, b in zip(grad(vocab_chunk), grad(0)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
  for a, ref in zip(grad(vocab_chunk), numpy_nll_grads(hidden, head, targets)):
    np.testing.assert_allclose(np.asarray(a), ref, rtol=1e-4, atol=1e-4)
