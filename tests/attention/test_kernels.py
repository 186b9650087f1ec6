"""Attention kernels against the `xla` reference: forward, gradients, packing, GQA, decoding.

`xla.attention` materialises the full masked score matrix and is itself checked against a
float64 NumPy softmax here, so the other kernels are compared with an independently checked
reference. Splash runs through Pallas' interpreter on CPU; cuDNN and real-TPU tests skip off
their hardware.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import attention
from llama_jax.attention import chunked, cudnn, splash, xla, xla_blocked
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from llama_jax.perf import jax_step as bench_jax

ON_GPU = jax.default_backend() == "gpu"
ON_TPU = jax.default_backend() == "tpu"


def _qkv(b, t, s, h, k, d, seed=0, dtype=jnp.float32):
  rng = np.random.RandomState(seed)
  return (jnp.asarray(rng.randn(b, t, h, d), dtype), jnp.asarray(rng.randn(b, s, k, d), dtype),
          jnp.asarray(rng.randn(b, s, k, d), dtype))


def _packed_segments(b, t, seed=0):
  """Several documents per row (ids 1, 2, ...) and trailing padding (id 0) in some rows."""
  rng = np.random.RandomState(seed)
  rows = []
  for r in range(b):
    cuts = np.sort(rng.choice(np.arange(1, t), size=3, replace=False))
    ids = np.searchsorted(cuts, np.arange(t), side="right") + 1
    if r % 2:
      ids[cuts[-1]:] = 0  # the last "document" is padding
    rows.append(ids)
  return jnp.asarray(np.stack(rows), jnp.int32)


def _numpy_attention(q, k, v, q_seg, kv_seg, q_offset):
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, t, h, d = q.shape
  s, n_kv = k.shape[1], k.shape[2]
  out = np.zeros_like(q)
  for bi in range(b):
    for hi in range(h):
      kh = hi // (h // n_kv)
      scores = q[bi, :, hi] @ k[bi, :, kh].T / np.sqrt(d)
      visible = np.arange(s)[None, :] <= (np.arange(t)[:, None] + q_offset)
      if q_seg is not None:
        visible &= np.asarray(q_seg)[bi][:, None] == np.asarray(kv_seg)[bi][None, :]
      scores = np.where(visible, scores, -np.inf)
      p = np.exp(scores - scores.max(-1, keepdims=True))
      out[bi, :, hi] = (p / p.sum(-1, keepdims=True)) @ v[bi, :, kh]
  return out


def _loss(fn, **kw):
  # A non-linear read-out so every output element gets a different cotangent.
  return lambda q, k, v: jnp.sum(jnp.sin(fn(q, k, v, **kw)) * (1 + jnp.arange(q.shape[-1]) / 8))


def _assert_same(fn, q, k, v, atol=2e-5, grad_atol=5e-5, **kw):
  want = jax.jit(lambda q, k, v: xla.attention(q, k, v, **kw))(q, k, v)
  got = jax.jit(lambda q, k, v: fn(q, k, v, **kw))(q, k, v)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=atol, rtol=0)
  want_g = jax.jit(jax.grad(_loss(xla.attention, **kw), argnums=(0, 1, 2)))(q, k, v)
  got_g = jax.jit(jax.grad(_loss(fn, **kw), argnums=(0, 1, 2)))(q, k, v)
  for name, a, b in zip("qkv", got_g, want_g):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=grad_atol, rtol=0,
                               err_msg=f"d{name}")


# ------------------------------------------------------------------------------ xla reference
@pytest.mark.parametrize("packed,q_offset,t,s", [(False, 0, 19, 19), (True, 0, 19, 19),
                                                 (False, 9, 3, 16), (True, 5, 4, 16)])
def test_xla_reference_matches_float64_numpy(packed, q_offset, t, s):
  q, k, v = _qkv(2, t, s, 4, 2, 8)
  kv_seg = _packed_segments(2, s) if packed else None
  q_seg = None if kv_seg is None else kv_seg[:, q_offset:q_offset + t]
  got = xla.attention(q, k, v, q_segment_ids=q_seg, kv_segment_ids=kv_seg, q_offset=q_offset)
  want = _numpy_attention(q, k, v, q_seg, kv_seg, q_offset)
  np.testing.assert_allclose(np.asarray(got), want, atol=2e-6, rtol=0)


# ------------------------------------------------------------------------------ xla_blocked
@pytest.mark.parametrize("b,t,h,k,d,blocks,packed", [
    (2, 16, 4, 4, 8, 1, False),  # one block: plain full attention in the head-first layout
    (2, 37, 4, 2, 8, 8, False),  # GQA, a length the blocks do not divide
    (2, 37, 4, 2, 8, 5, True),  # packed documents and padding
    (3, 9, 4, 1, 16, 16, True),  # more blocks than rows: one row per block
])
def test_xla_blocked_matches_xla_forward_and_gradients(b, t, h, k, d, blocks, packed):
  q, kk, v = _qkv(b, t, t, h, k, d, seed=11)
  seg = _packed_segments(b, t, seed=12) if packed else None
  fn = lambda q, k, v, **kw: xla_blocked.attention(q, k, v, num_blocks=blocks, **kw)
  _assert_same(fn, q, kk, v, q_segment_ids=seg, kv_segment_ids=seg)


@pytest.mark.parametrize("static", [True, False])
def test_xla_blocked_with_a_query_offset_matches_xla(static):
  """Static offsets keep the block split (key prefixes shift by q_offset); traced ones run
  unsplit — both give the reference's values."""
  q, k, v = _qkv(2, 6, 20, 4, 2, 8, seed=13)
  seg = jnp.asarray(np.where(np.arange(20) < 14, 1, 0)[None].repeat(2, 0), jnp.int32)
  kw = dict(q_segment_ids=seg[:, 8:14], kv_segment_ids=seg)
  want = xla.attention(q, k, v, q_offset=8, **kw)
  if static:
    got = xla_blocked.attention(q, k, v, q_offset=8, num_blocks=3, **kw)
  else:
    got = jax.jit(lambda off: xla_blocked.attention(q, k, v, q_offset=off, num_blocks=3, **kw))(8)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-6)


def test_xla_blocked_skips_the_keys_no_query_of_a_block_can_see():
  """Block skipping is real: NaN keys past a block's prefix must not reach its outputs, and the
  compiled step is smaller than the unsplit one."""
  q, k, v = _qkv(1, 32, 32, 2, 2, 8, seed=14)
  poisoned = [x.at[:, 8:].set(jnp.nan) for x in (k, v)]
  got = xla_blocked.attention(q, *poisoned, num_blocks=4)  # block 0 = queries 0..7, keys 0..7
  np.testing.assert_allclose(np.asarray(got[:, :8]), np.asarray(xla.attention(q, k, v)[:, :8]),
                             atol=2e-6)
  assert np.all(np.isnan(np.asarray(got[:, 8:])))  # later blocks do read the poisoned keys
  flops = lambda n: bench_jax.flops_from_cost_analysis(jax.jit(
      lambda q, k, v: xla_blocked.attention(q, k, v, num_blocks=n)).lower(q, k, v).compile())
  assert flops(8) < 0.7 * flops(1)


# ------------------------------------------------------------------------------ chunked
CHUNKED_CASES = {
    # name: (B, T, H, K, D, block_q, block_k, packed)
    "mha_one_block": (2, 16, 4, 4, 8, 16, 16, False),
    "gqa_odd_length": (2, 37, 4, 2, 8, 8, 8, False),
    "gqa_packed_odd": (2, 37, 4, 2, 8, 8, 8, True),
    "mqa_packed_uneven_blocks": (3, 45, 4, 1, 16, 16, 7, True),
    "blocks_larger_than_sequence": (1, 11, 2, 2, 8, 64, 64, True),
}


@pytest.mark.parametrize("case", list(CHUNKED_CASES))
def test_chunked_matches_xla_forward_and_gradients(case):
  b, t, h, k, d, bq, bk, packed = CHUNKED_CASES[case]
  q, kk, v = _qkv(b, t, t, h, k, d, seed=1)
  seg = _packed_segments(b, t, seed=2) if packed else None
  fn = lambda q, k, v, **kw: chunked.attention(q, k, v, block_q=bq, block_k=bk, **kw)
  _assert_same(fn, q, kk, v, q_segment_ids=seg, kv_segment_ids=seg)


@pytest.mark.parametrize("q_offset,t", [(0, 1), (13, 1), (21, 5), (40, 8)])
def test_chunked_decoding_against_a_cache_matches_xla(q_offset, t):
  """T new queries at key index q_offset against a longer cache whose tail is empty (id 0)."""
  s = 48
  q, k, v = _qkv(2, t, s, 4, 2, 8, seed=3)
  kv_seg = np.array(_packed_segments(2, s, seed=4))
  kv_seg[:, q_offset + t:] = 0  # empty cache slots
  kv_seg[:, q_offset:q_offset + t] = np.maximum(kv_seg[:, q_offset:q_offset + t], 1)
  q_seg = kv_seg[:, q_offset:q_offset + t]
  kv_seg, q_seg = jnp.asarray(kv_seg), jnp.asarray(q_seg)
  kw = dict(q_segment_ids=q_seg, kv_segment_ids=kv_seg)
  want = xla.attention(q, k, v, q_offset=q_offset, **kw)
  # q_offset traced, as it is when it comes from KVCache.index inside a jitted step.
  run = jax.jit(lambda q, k, v, off: chunked.attention(q, k, v, q_offset=off, block_size=8, **kw))
  np.testing.assert_allclose(np.asarray(run(q, k, v, q_offset)), np.asarray(want), atol=2e-5)
  grad = lambda fn: jax.jit(jax.grad(_loss(fn, q_offset=q_offset, **kw), argnums=(0, 1, 2)))(
      q, k, v)
  for got, want_grad in zip(grad(lambda *a, **kw: chunked.attention(*a, block_size=8, **kw)),
                            grad(xla.attention)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want_grad), atol=5e-5)


def test_chunked_never_reads_key_blocks_beyond_the_causal_frontier():
  """Causal block skipping: NaNs in key blocks no query can see must not reach the output."""
  q, k, v = _qkv(1, 4, 64, 2, 2, 8, seed=5)
  q_offset, block = 10, 8  # queries at 10..13 see key blocks 0 and 1 only
  poisoned_k = k.at[:, 16:].set(jnp.nan)
  poisoned_v = v.at[:, 16:].set(jnp.nan)
  run = jax.jit(lambda q, k, v, off: chunked.attention(q, k, v, q_offset=off, block_size=block))
  got = run(q, poisoned_k, poisoned_v, q_offset)
  assert np.all(np.isfinite(np.asarray(got)))
  want = xla.attention(q[:, :, :], k[:, :16], v[:, :16], q_offset=q_offset)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5)
  # Training shape: gradients of the first query block never touch later key blocks.
  q2, k2, v2 = _qkv(1, 32, 32, 2, 2, 8, seed=6)
  loss = lambda q, k, v: jnp.sum(chunked.attention(q, k, v, block_size=8)[:, :8] ** 2)
  dk = jax.grad(loss, argnums=1)(q2, k2, v2)
  assert np.all(np.asarray(dk[:, 8:]) == 0)


def test_chunked_bfloat16_is_close_to_float32_reference():
  q, k, v = _qkv(2, 40, 40, 4, 2, 16, seed=7)
  seg = _packed_segments(2, 40, seed=8)
  kw = dict(q_segment_ids=seg, kv_segment_ids=seg)
  want = xla.attention(q, k, v, **kw)
  bf = [x.astype(jnp.bfloat16) for x in (q, k, v)]
  got = chunked.attention(*bf, block_size=16, **kw)
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(got, np.float32), np.asarray(want), atol=3e-2)


def _train_memory(impl, t, block=512):
  """Compiled temp bytes of forward+backward of one attention call at length t."""
  q, k, v = (jax.ShapeDtypeStruct((1, t, 2, 16), jnp.float32) for _ in range(3))
  fn = lambda q, k, v: jnp.sum(attention.dot_product_attention(
      q, k, v, impl=impl, **({"block_size": block} if impl == "chunked" else {})))
  compiled = jax.jit(jax.grad(fn, argnums=(0, 1, 2))).lower(q, k, v).compile()
  return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_memory_grows_linearly_with_length():
  small, large = _train_memory("chunked", 4096), _train_memory("chunked", 8192)
  assert large <= 2.2 * small, (small, large)
  xla_small, xla_large = _train_memory("xla", 4096), _train_memory("xla", 8192)
  assert xla_large >= 3.5 * xla_small, (xla_small, xla_large)  # the reference is quadratic
  assert large * 20 < xla_large


def test_chunked_rejects_bad_arguments():
  q, k, v = _qkv(1, 8, 8, 4, 3, 8)
  with pytest.raises(ValueError, match="key/value heads must divide"):
    chunked.attention(q, k, v)
  q, k, v = _qkv(1, 8, 8, 4, 2, 8)
  with pytest.raises(ValueError, match="both q_segment_ids and kv_segment_ids"):
    chunked.attention(q, k, v, q_segment_ids=jnp.ones((1, 8), jnp.int32))


# ------------------------------------------------------------------------------ model level
def _model_loss(cfg, params, tokens, **kw):
  logits = spec_lib.from_params(cfg, params)(tokens, **kw)
  return jnp.mean(jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(
      logits, tokens[..., None], -1)[..., 0])


def test_model_with_chunked_attention_matches_xla():
  base = preset("tiny", attention_block_size=8)
  params = spec_lib.to_params(model_lib.init(base, seed=0))
  tokens = jnp.asarray(np.random.RandomState(0).randint(0, 256, size=(2, 29)))
  seg = _packed_segments(2, 29, seed=9)
  chunked_cfg = base.replace(attention="chunked")
  for kw in ({"segment_ids": seg},):  # unpacked inputs are covered at kernel level
    want, want_g = jax.jit(jax.value_and_grad(
        lambda p, kw=kw: _model_loss(base, p, tokens, **kw)))(params)
    got, got_g = jax.jit(jax.value_and_grad(
        lambda p, kw=kw: _model_loss(chunked_cfg, p, tokens, **kw)))(params)
    np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         atol=2e-6), got_g, want_g)


def test_model_decoding_with_chunked_attention_matches_full_forward():
  cfg = preset("tiny", attention="chunked", attention_block_size=4)
  model = model_lib.init(cfg, seed=1)
  tokens = jnp.asarray(np.random.RandomState(1).randint(0, 256, size=(2, 13)))
  full = model(tokens)
  cache = model_lib.KVCache.init(cfg, batch=2, max_len=24)
  step = jax.jit(lambda tok, cache: model_lib.Llama.__call__(model, tok, cache=cache))
  logits, cache = step(tokens[:, :9], cache)
  outs = [logits]
  for i in range(9, 13):
    logits, cache = step(tokens[:, i:i + 1], cache)
    outs.append(logits)
  np.testing.assert_allclose(np.asarray(jnp.concatenate(outs, 1)), np.asarray(full), atol=1e-5)


# ------------------------------------------------------------------------------ splash
def test_splash_in_pallas_interpreter_matches_xla_with_packing_and_gqa():
  q, k, v = _qkv(2, 150, 150, 4, 2, 16, seed=10)  # 150: two 128 blocks, the last padded
  seg = _packed_segments(2, 150, seed=11)
  fn = lambda q, k, v, **kw: splash.attention(q, k, v, interpret=True, block_size=128, **kw)
  _assert_same(fn, q, k, v, q_segment_ids=seg, kv_segment_ids=seg)


def test_splash_in_pallas_interpreter_matches_xla_without_segments():
  q, k, v = _qkv(1, 100, 100, 2, 2, 16, seed=12)  # one padded block, MHA
  fn = lambda q, k, v, **kw: splash.attention(q, k, v, interpret=True, block_size=128, **kw)
  _assert_same(fn, q, k, v)


@pytest.mark.skipif(ON_TPU, reason="checks the error raised off TPU")
def test_splash_off_tpu_raises_a_clear_error():
  q, k, v = _qkv(1, 8, 8, 2, 2, 8)
  with pytest.raises(RuntimeError, match="only on TPU.*chunked"):
    attention.dot_product_attention(q, k, v, impl="splash")


def test_splash_refuses_decoding():
  q, k, v = _qkv(1, 2, 8, 2, 2, 8)
  with pytest.raises(ValueError, match="KV cache"):
    splash.attention(q, k, v, q_offset=6, interpret=True)


@pytest.mark.skipif(not ON_TPU, reason="needs a TPU (the Pallas splash kernel compiles for TPU "
                    "only); the interpreter tests above cover its semantics on CPU")
def test_splash_on_tpu_matches_xla():
  q, k, v = _qkv(2, 512, 512, 8, 2, 128, seed=13)
  seg = _packed_segments(2, 512, seed=14)
  _assert_same(splash.attention, q, k, v, atol=2e-3, grad_atol=2e-2, q_segment_ids=seg,
               kv_segment_ids=seg)


# ------------------------------------------------------------------------------ cudnn
@pytest.mark.skipif(ON_GPU, reason="checks the error raised off GPU")
def test_cudnn_off_gpu_raises_a_clear_error():
  q, k, v = _qkv(1, 8, 8, 2, 2, 8, dtype=jnp.bfloat16)
  with pytest.raises(RuntimeError, match="needs an NVIDIA GPU.*chunked"):
    attention.dot_product_attention(q, k, v, impl="cudnn")


@pytest.mark.skipif(not ON_GPU, reason="needs an NVIDIA GPU with cuDNN flash attention")
def test_cudnn_on_gpu_matches_xla():
  q, k, v = _qkv(2, 256, 256, 8, 2, 64, seed=15, dtype=jnp.bfloat16)
  _assert_same(cudnn.attention, q, k, v, atol=3e-2, grad_atol=1e-1)


@pytest.mark.skipif(not ON_GPU, reason="needs an NVIDIA GPU")
def test_cudnn_refuses_segment_ids_instead_of_attending_across_documents():
  q, k, v = _qkv(1, 64, 64, 2, 2, 64, dtype=jnp.bfloat16)
  seg = _packed_segments(1, 64)
  with pytest.raises(ValueError, match="segment ids.*chunked"):
    cudnn.attention(q, k, v, q_segment_ids=seg, kv_segment_ids=seg)


# ------------------------------------------------------------------------------ dispatch
def test_dispatch_reaches_each_cpu_implementation():
  q, k, v = _qkv(1, 12, 12, 2, 1, 8, seed=16)
  want = xla.attention(q, k, v)
  for impl in ("xla", "xla_blocked", "chunked", "auto"):
    got = attention.dot_product_attention(q, k, v, impl=impl)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=2e-5, err_msg=impl)
