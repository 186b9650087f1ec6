"""`shared_prefix`: leading keys every query sees whatever its segment (prefix tuning), in every
kernel that declares the capability, against float64 NumPy; gradients against `xla`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import attention

B, T, H, K, D, N = 2, 24, 4, 2, 8, 3  # N shared keys ahead of T own keys


def reference(q, k, v, q_seg, kv_seg, q_offset, n):
  """float64 softmax attention; key j visible to query i iff j <= q_offset + i and (segments
  equal or j < n)."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  t, s = q.shape[1], k.shape[1]
  g = H // K
  out = np.zeros(q.shape)
  for b in range(B):
    for i in range(t):
      for h in range(H):
        scores = k[b, :, h // g] @ q[b, i, h] / np.sqrt(D)
        j = np.arange(s)
        ok = j <= q_offset + i
        if q_seg is not None:
          ok &= (np.asarray(kv_seg)[b] == np.asarray(q_seg)[b, i]) | (j < n)
        w = np.where(ok, np.exp(scores - scores[ok].max()), 0.0)
        out[b, i, h] = (w / w.sum()) @ v[b, :, h // g]
  return out


def inputs(seed=0):
  rng = np.random.RandomState(seed)
  q = rng.randn(B, T, H, D).astype(np.float32)
  k = rng.randn(B, N + T, K, D).astype(np.float32)
  v = rng.randn(B, N + T, K, D).astype(np.float32)
  # Row 0: two packed documents; row 1: left padding (segment 0) then one document.
  seg = np.array([[1] * 10 + [2] * 14, [0] * 5 + [1] * 19], np.int32)
  kv_seg = np.concatenate([np.full((B, N), 7, np.int32), seg], axis=1)  # prefix ids: anything
  return q, k, v, jnp.asarray(seg), jnp.asarray(kv_seg)


KERNELS = [("xla", {}), ("xla_blocked", {}), ("chunked", dict(block_size=8)),
           ("chunked", dict(block_size=5))]


def test_capabilities():
  assert {"xla", "xla_blocked", "chunked"} <= set(attention.prefix_kernels())
  assert not attention.get("cudnn").prefix and not attention.get("splash").prefix


@pytest.mark.parametrize("kernel,options", KERNELS)
@pytest.mark.parametrize("segments", [True, False])
def test_shared_prefix_matches_numpy(kernel, options, segments):
  q, k, v, seg, kv_seg = inputs()
  q_seg, kv = (seg, kv_seg) if segments else (None, None)
  got = attention.dot_product_attention(
      jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), impl=kernel, q_segment_ids=q_seg,
      kv_segment_ids=kv, q_offset=N, shared_prefix=N, **options)
  want = reference(q, k, v, q_seg, kv, N, N)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-5, rtol=1e-5)
  if segments:  # without the shared prefix the second document could not see those keys
    without = reference(q, k, v, q_seg, kv, N, 0)
    assert np.max(np.abs(without - want)) > 1e-2


@pytest.mark.parametrize("kernel,options", KERNELS[1:])
def test_gradients_match_xla(kernel, options):
  q, k, v, seg, kv_seg = inputs(1)
  w = jnp.asarray(np.random.RandomState(3).randn(B, T, H, D), jnp.float32)

  def loss(impl, opts):
    return lambda q_, k_, v_: jnp.sum(w * attention.dot_product_attention(
        q_, k_, v_, impl=impl, q_segment_ids=seg, kv_segment_ids=kv_seg, q_offset=N,
        shared_prefix=N, **opts))

  args = tuple(map(jnp.asarray, (q, k, v)))
  want = jax.grad(loss("xla", {}), argnums=(0, 1, 2))(*args)
  got = jax.grad(loss(kernel, options), argnums=(0, 1, 2))(*args)
  for g, w_ in zip(got, want):
    np.testing.assert_allclose(np.asarray(g), np.asarray(w_), atol=2e-5, rtol=1e-4)


def test_a_kernel_without_the_capability_is_never_given_a_prefix(monkeypatch):
  from llama_jax.attention import registry
  fake = registry.Kernel(name="no_prefix", fn=lambda *a, **k: None)
  monkeypatch.setitem(registry.KERNELS._entries, "no_prefix", fake)
  q, k, v, _, _ = inputs()
  with pytest.raises(ValueError, match=r"'no_prefix' cannot take a shared prefix.*xla"):
    attention.dot_product_attention(q, k, v, impl="no_prefix", q_offset=N, shared_prefix=N)
