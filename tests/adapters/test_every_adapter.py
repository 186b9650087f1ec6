"""Every registered adapter across the model's variants: scanned or unrolled layers, remat
policies and attention kernels give the same logits and gradients, bfloat16 compute stays close
to float32, and cached decoding equals the full forward pass."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import adapters
from llama_jax.inference import generate
from llama_jax.model import loss as loss_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset

CFG = preset("tiny", vocab_size=128, max_position_embeddings=64)
TOKENS = np.random.RandomState(5).randint(0, 128, size=(2, 16))
ADAPTERS = {
    "lora_dora": ("lora", dict(rank=4, targets=("q", "k", "v", "o", "gate", "up", "down"),
                               dora=True, dropout=0.0)),
    "series_learned": ("series", dict(bottleneck_size=8, targets=("q", "o", "gate", "down"),
                                      scaling="learned")),
    "parallel": ("parallel", dict(bottleneck_size=8, targets=("k", "o", "up", "down"))),
    "prefix": ("prefix", dict(num_virtual_tokens=3)),
}


def params_for(name, cfg=CFG):
  kind, options = ADAPTERS[name]
  adapter = adapters.build(kind, options, cfg)
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  params = jax.jit(lambda: spec.init_params(0))()

  def perturb(path, x):  # every adapter value visible in the logits (LoRA's B starts at 0)
    p = str(path)
    if "lora_b" in p or "adapter_up" in p:
      return 0.2 * jax.random.normal(jax.random.PRNGKey(zlib.crc32(p.encode())), x.shape)
    return x
  return adapter, jax.tree_util.tree_map_with_path(perturb, params)


def batch():
  t = TOKENS.shape[1] - 1
  return dict(tokens=TOKENS[:, :-1], targets=TOKENS[:, 1:], loss_mask=np.ones((2, t)),
              segment_ids=np.array([[1] * 6 + [2] * (t - 6), [0] * 4 + [1] * (t - 4)], np.int32),
              positions=np.array([list(range(6)) + list(range(t - 6)),
                                  [0] * 4 + list(range(t - 4))], np.int32))


def logits_and_grads(adapter, params, **overrides):
  spec = spec_lib.ModelSpec.build(CFG.replace(**overrides), adapter=adapter)
  trainable, frozen = spec.split_trainable(params)
  logits = spec.merge(params)(jnp.asarray(TOKENS))
  grads = jax.grad(lambda t: loss_lib.batch_loss_sums(
      spec.merge(spec_lib.combine(t, frozen)), batch())[0])(trainable)
  return np.asarray(logits), grads


def test_every_registered_adapter_is_covered():
  assert {name for name, _ in ADAPTERS.values()} == set(adapters.names())


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_layouts_remat_and_kernels_agree(name):
  adapter, params = params_for(name)
  want_logits, want_grads = logits_and_grads(adapter, params)
  for overrides in (dict(scan_layers=False, remat="full"),
                    dict(attention="xla_blocked", remat="save_qkv"),
                    dict(attention="chunked", attention_block_size=4, remat="save_dots")):
    got_logits, got_grads = logits_and_grads(adapter, params, **overrides)
    np.testing.assert_allclose(got_logits, want_logits, atol=2e-5, rtol=1e-5,
                               err_msg=str(overrides))
    message = str(overrides)
    jax.tree.map(lambda a, b, m=message: np.testing.assert_allclose(a, b, atol=1e-5, rtol=2e-4,
                                                                    err_msg=m),
                 got_grads, want_grads)


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_bfloat16_compute_is_close(name):
  adapter, params = params_for(name)
  want = np.asarray(spec_lib.ModelSpec.build(CFG, adapter=adapter).merge(params)(
      jnp.asarray(TOKENS)))
  spec = spec_lib.ModelSpec.build(CFG.replace(dtype="bfloat16"), adapter=adapter)
  got = np.asarray(spec.merge(params)(jnp.asarray(TOKENS)))
  assert got.dtype == np.float32
  assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want))


@pytest.mark.parametrize("name", list(ADAPTERS))
def test_cached_decoding_equals_the_full_forward(name):
  cfg = CFG.replace(attention="chunked", attention_block_size=4)
  adapter, params = params_for(name, cfg)
  model = spec_lib.ModelSpec.build(cfg, adapter=adapter).merge(params)
  prompts = [list(TOKENS[0, :6]), list(TOKENS[1, :3])]
  logits, cache = generate.prefill(model, generate.pad_prompts(prompts), max_len=10)
  seqs = [list(p) for p in prompts]
  for _ in range(3):
    for row in range(2):
      full = model(jnp.asarray([seqs[row]]))[0, -1]
      np.testing.assert_allclose(np.asarray(logits[row]), np.asarray(full), atol=1e-4, rtol=0)
    nxt = np.asarray(jnp.argmax(logits, -1))
    for row in range(2):
      seqs[row].append(int(nxt[row]))
    logits, cache = generate.decode_step(model, nxt, np.array([len(s) - 1 for s in seqs]), cache)
