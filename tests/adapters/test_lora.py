"""LoRA, rsLoRA and DoRA against HF peft (`get_peft_model` on LlamaForCausalLM, CPU, float32):
logits, one step's adapter gradients, export and import of the peft format, merging; and the
adapter's behaviour across layer scanning, remat policies, bfloat16 and dropout."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import adapters
from llama_jax.interop import peft as peft_io
from llama_jax.model import loss as loss_lib
from llama_jax.model import spec as spec_lib
from tests.references import peft_reference as ref

TOKENS = np.random.RandomState(0).randint(0, 128, size=(2, 24))
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CASES = {
    "qv_r8": dict(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
    "attn_mlp_r4": dict(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj", "down_proj",
                                                           "gate_proj"]),
    "all_r2": dict(r=2, lora_alpha=7, target_modules="all-linear"),
    "rslora_r16": dict(r=16, lora_alpha=4, target_modules=ALL, use_rslora=True),
    "dora_r4": dict(r=4, lora_alpha=8, target_modules=ALL, use_dora=True),
    "dora_rslora_r3": dict(r=3, lora_alpha=6, target_modules=["k_proj", "up_proj"],
                           use_dora=True, use_rslora=True),
}


def imported(tmp_path, case, seed=0):
  """(peft model, our config, our model holding the same weights, adapter, base params)."""
  model, _, cfg, base = ref.base_and_config(seed)
  pm = ref.peft_lora(model, **CASES[case])
  pm.save_pretrained(tmp_path / case)
  adapter, params = peft_io.read_adapter(tmp_path / case, cfg)
  ours = spec_lib.from_params(cfg, spec_lib.combine(base, params), adapter=adapter)
  return pm, cfg, ours, adapter, base, params


@pytest.mark.parametrize("case", list(CASES))
def test_logits_match_peft(tmp_path, case):
  pm, cfg, ours, adapter, base, _ = imported(tmp_path, case)
  want = ref.torch_logits(pm, TOKENS)
  got = np.asarray(ours(jnp.asarray(TOKENS)))
  assert np.max(np.abs(got - want)) <= 1e-4, np.max(np.abs(got - want))
  # The adapter really changes the model (a no-op adapter would pass the check above too).
  plain = np.asarray(spec_lib.from_params(cfg, base)(jnp.asarray(TOKENS)))
  assert np.max(np.abs(plain - want)) > 1e-2
  assert adapter.rslora == CASES[case].get("use_rslora", False)
  assert adapter.dora == CASES[case].get("use_dora", False)


def _peft_name(name: str) -> str:
  """A peft parameter name as it is saved (no adapter name; the magnitude without .weight)."""
  name = name.replace(".default", "")
  return name[:-len(".weight")] if "lora_magnitude_vector" in name else name


@pytest.mark.parametrize("case", ["attn_mlp_r4", "dora_r4"])
def test_one_step_gradients_match_peft(tmp_path, case):
  import torch
  pm, cfg, _, adapter, base, params = imported(tmp_path, case)
  pm.train()  # no dropout (0.0); DoRA's forward is the same in both modes without it
  loss = pm(input_ids=torch.as_tensor(TOKENS), labels=torch.as_tensor(TOKENS)).loss
  loss.backward()
  want = {_peft_name(n): p.grad.numpy() for n, p in pm.named_parameters() if p.requires_grad}

  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  batch = dict(tokens=TOKENS[:, :-1], targets=TOKENS[:, 1:], positions=np.broadcast_to(
      np.arange(TOKENS.shape[1] - 1), (2, TOKENS.shape[1] - 1)),
               segment_ids=np.ones((2, TOKENS.shape[1] - 1), np.int32),
               loss_mask=np.ones((2, TOKENS.shape[1] - 1), np.float32))

  def mean_loss(adapter_params):
    model = spec.merge(spec_lib.combine(adapter_params, jax.tree.map(jnp.asarray, base)))
    nll, n = loss_lib.batch_loss_sums(model, batch)
    return nll / n

  got_loss, grads = jax.value_and_grad(mean_loss)(jax.tree.map(jnp.asarray, params))
  assert float(got_loss) == pytest.approx(float(loss), rel=1e-5)
  got = peft_io.to_tensors(spec, jax.tree.map(np.asarray, grads))
  assert got.keys() == want.keys()
  for name, g in want.items():
    scale = np.max(np.abs(g))
    assert scale > 0, name
    np.testing.assert_allclose(got[name], g, atol=1e-4 * scale, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("dora", [False, True])
def test_our_export_loads_in_peft(tmp_path, dora):
  from peft import PeftModel
  model, _, cfg, base = ref.base_and_config(seed=1)
  adapter = adapters.build("lora", dict(rank=4, alpha=12.0, targets=("q", "k", "o", "up"),
                                        dora=dora, dropout=0.1))
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  params = jax.jit(lambda b: spec.init_params(3, b))(base)
  # A random B (the init's zero B would make any mapping of it look right).
  key = jax.random.PRNGKey(5)
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: (0.1 * jax.random.normal(jax.random.fold_in(key, zlib.crc32(str(p).encode())),
                                            x.shape) if "lora_b" in str(p) else x), params)
  files = peft_io.write_adapter(tmp_path / "ours", spec, jax.tree.map(np.asarray, params),
                                base_model="base-model")
  assert sorted(f.name for f in files) == ["adapter_config.json", "adapter_model.safetensors"]
  want = np.asarray(spec.merge(params)(jnp.asarray(TOKENS)))
  pm = PeftModel.from_pretrained(model, tmp_path / "ours").eval()
  got = ref.torch_logits(pm, TOKENS)
  assert np.max(np.abs(got - want)) <= 1e-4
  assert pm.peft_config["default"].use_dora == dora
  assert pm.peft_config["default"].lora_dropout == pytest.approx(0.1)


@pytest.mark.parametrize("case", ["attn_mlp_r4", "rslora_r16", "dora_r4"])
def test_merged_equals_unmerged_and_peft_merge(tmp_path, case):
  pm, cfg, ours, adapter, base, params = imported(tmp_path, case)
  merged = adapter.merge(spec_lib.combine(base, params))
  spec_lib.ModelSpec.build(cfg).check(merged)  # base parameters only
  got = np.asarray(spec_lib.from_params(cfg, merged)(jnp.asarray(TOKENS)))
  np.testing.assert_allclose(got, np.asarray(ours(jnp.asarray(TOKENS))), atol=1e-4, rtol=0)
  # The merged weights themselves equal peft's merge_and_unload (HF [out, in] layout).
  from llama_jax.interop import hf_layout
  hf_state = ref.hf.hf_state(pm.merge_and_unload())
  for name, w in hf_layout.params_to_hf(cfg, jax.tree.map(np.asarray, merged)):
    np.testing.assert_allclose(w, hf_state[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_default_init_is_the_base_model():
  _, _, cfg, base = ref.base_and_config()
  plain = np.asarray(spec_lib.from_params(cfg, base)(jnp.asarray(TOKENS)))
  for dora in (False, True):
    adapter = adapters.build("lora", dict(rank=4, targets=tuple(adapters.registry.TARGETS),
                                          dora=dora))
    spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
    params = jax.jit(lambda b, spec=spec: spec.init_params(0, b))(base)
    b = params["layers"]["attention"]["q_proj"]["lora_b"]
    assert not np.any(np.asarray(b))
    assert np.any(np.asarray(params["layers"]["attention"]["q_proj"]["lora_a"]))
    got = np.asarray(spec.merge(params)(jnp.asarray(TOKENS)))
    if dora:  # m / ‖W‖ = 1 up to rounding
      np.testing.assert_allclose(got, plain, atol=1e-5, rtol=0)
    else:  # x·W + 0 exactly
      np.testing.assert_array_equal(got, plain)


# ------------------------------------------------------------------------------ model variants
def _lora_model_params(tmp_path, case="dora_r4"):
  pm, cfg, _, adapter, base, params = imported(tmp_path, case)
  return cfg, adapter, spec_lib.combine(base, params), ref.torch_logits(pm, TOKENS)


@pytest.mark.parametrize("overrides", [
    dict(scan_layers=False), dict(remat="full"), dict(remat="save_dots"),
    dict(remat="minimal", scan_layers=False), dict(attention="chunked", attention_block_size=8),
    dict(attention="xla_blocked")])
def test_scanned_unrolled_remat_kernels(tmp_path, overrides):
  cfg, adapter, params, want = _lora_model_params(tmp_path)
  cfg = cfg.replace(**overrides)
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  params = jax.tree.map(jnp.asarray, params)
  got = np.asarray(spec.merge(params)(jnp.asarray(TOKENS)))
  assert np.max(np.abs(got - want)) <= 1e-4
  batch = dict(tokens=TOKENS[:, :-1], targets=TOKENS[:, 1:], loss_mask=np.ones((2, 23)),
               segment_ids=np.ones((2, 23), np.int32),
               positions=np.broadcast_to(np.arange(23), (2, 23)))
  trainable, frozen = spec.split_trainable(params)
  grads = jax.grad(lambda t: loss_lib.batch_loss_sums(
      spec.merge(spec_lib.combine(t, frozen)), batch)[0])(trainable)
  ref_spec = spec_lib.ModelSpec.build(cfg.replace(scan_layers=True, remat="none",
                                                  attention="xla"), adapter=adapter)
  want_grads = jax.grad(lambda t: loss_lib.batch_loss_sums(
      ref_spec.merge(spec_lib.combine(t, frozen)), batch)[0])(trainable)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-4, atol=1e-5),
               grads, want_grads)


def test_bfloat16_compute(tmp_path):
  cfg, adapter, params, want = _lora_model_params(tmp_path)
  spec = spec_lib.ModelSpec.build(cfg.replace(dtype="bfloat16"), adapter=adapter)
  model = spec.merge(jax.tree.map(jnp.asarray, params))
  got = np.asarray(model(jnp.asarray(TOKENS)))
  # Adapter branch in float32, base matmuls in bfloat16: close to the float32 reference.
  assert np.max(np.abs(got - want)) < 0.1 * np.max(np.abs(want))
  assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.999


def test_dropout_acts_on_the_adapter_input_only():
  """With a key, LoRA's branch sees dropout(x) (inverted, rate p); the base path sees x."""
  from flax import nnx

  from llama_jax.adapters import lora
  from llama_jax.adapters.registry import dropout
  from llama_jax.model.llama import Context
  rng = np.random.RandomState(0)
  x = jnp.asarray(rng.randn(4, 6, 16), jnp.float32)
  w = jnp.asarray(rng.randn(16, 2, 5), jnp.float32)
  proj = adapters.registry.Projection("q", None, "q_proj", 1, (1, 16, 2, 5),
                                      ("layers", "embed", "heads", "head_dim"))
  for dora in (False, True):
    seam = lora.LoraLinear(proj, 3, 1.5, 0.25, dora, nnx.Rngs(params=0))
    a, b, m = rng.randn(16, 3), rng.randn(3, 2, 5), np.abs(rng.randn(2, 5)) + 0.5
    # One layer's values (the seam inside the layer scan sees its layer's slice).
    seam.lora_a.set_value(jnp.asarray(a, jnp.float32))
    seam.lora_b.set_value(jnp.asarray(b, jnp.float32))
    if dora:
      seam.magnitude.set_value(jnp.asarray(m, jnp.float32))
    ctx = Context(None, None, None, None, 0, None, None, rng=jax.random.PRNGKey(7))
    got = np.asarray(seam(x, w, ctx), np.float64)
    xd = np.asarray(dropout(x, ctx, 0.25, proj.salt), np.float64)
    kept = xd != 0
    assert 0.6 < kept.mean() < 0.9
    np.testing.assert_allclose(xd[kept], np.asarray(x, np.float64)[kept] / 0.75, rtol=1e-6)
    x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64).reshape(16, 10)
    branch = 1.5 * (xd.reshape(-1, 16) @ a @ b.reshape(3, 10))
    base = x64.reshape(-1, 16) @ w64
    if dora:
      ratio = m.reshape(-1) / np.linalg.norm(w64 + 1.5 * a @ b.reshape(3, 10), axis=0)
      want = base + (ratio - 1) * (xd.reshape(-1, 16) @ w64) + ratio * branch
    else:
      want = base + branch
    np.testing.assert_allclose(got.reshape(-1, 10), want, rtol=1e-4, atol=1e-4)
    # Without a key (evaluation) there is no dropout.
    evaluated = np.asarray(seam(x, w, ctx._replace(rng=None)), np.float64).reshape(-1, 10)
    branch = 1.5 * (x64.reshape(-1, 16) @ a @ b.reshape(3, 10))
    if dora:
      want = ratio * (base + branch)
    else:
      want = base + branch
    np.testing.assert_allclose(evaluated, want, rtol=1e-4, atol=1e-4)
