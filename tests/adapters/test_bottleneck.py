"""Series and parallel bottleneck adapters: the seam against float64 NumPy from the definitions,
the whole model against HF LlamaForCausalLM with the fork's forward as torch hooks (weights
through LLM-Adapters' file format), and the zero up-projection giving the base model."""
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from llama_jax import adapters
from llama_jax.adapters import bottleneck
from llama_jax.adapters.registry import Projection
from llama_jax.interop import peft as peft_io
from llama_jax.model import spec as spec_lib
from tests.references import peft_reference as ref

TOKENS = np.random.RandomState(1).randint(0, 128, size=(2, 20))

# (weight [*in, *out] of one layer, n_in, logical axes with the layer axis)
Q_WEIGHT = ((16, 4, 6), 1, ("layers", "embed", "heads", "head_dim"))
O_WEIGHT = ((4, 6, 16), 2, ("layers", "heads", "head_dim", "embed"))


@pytest.mark.parametrize("placement", bottleneck.PLACEMENTS)
@pytest.mark.parametrize("weight", ["q", "o"])
@pytest.mark.parametrize("scaling,act", [(1.0, "tanh"), (0.5, "relu"), ("learned", "gelu")])
def test_seam_matches_numpy(placement, weight, scaling, act):
  shape, n_in, axes = Q_WEIGHT if weight == "q" else O_WEIGHT
  p = Projection(weight, None, f"{weight}_proj", n_in, (1,) + shape, axes)
  seam = bottleneck.BottleneckLinear(p, placement, 5, act, scaling, 0.0, "bert",
                                     nnx.Rngs(params=0))
  rng = np.random.RandomState(2)
  down = rng.randn(*seam.adapter_down.shape[1:])
  up = rng.randn(*seam.adapter_up.shape[1:])
  seam.adapter_down.set_value(jnp.asarray(down, jnp.float32))  # one layer's slice
  seam.adapter_up.set_value(jnp.asarray(up, jnp.float32))
  s = scaling
  if scaling == "learned":
    s = 0.7
    seam.adapter_scaling.set_value(jnp.asarray(s, jnp.float32))
  x = rng.randn(3, 7, *shape[:n_in])
  w = rng.randn(*shape)
  got = np.asarray(seam(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)), np.float64)

  def lin(u):
    return (u.reshape(21, -1) @ w.reshape(int(np.prod(shape[:n_in])), -1)).reshape(
        (3, 7) + shape[n_in:])

  f = lambda u: ref.bottleneck_np(u, down, up, s, act)
  if placement == "before":
    want = lin(x + f(x))
  elif placement == "after":
    want = lin(x) + f(lin(x))
  else:
    want = lin(x) + f(x)
  np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * np.max(np.abs(want)))


CASES = {
    "series_mlp": ("series", dict(targets=("gate", "up", "down"), bottleneck_size=8)),
    "series_after_mlp_learned": ("series", dict(targets=("down",), bottleneck_size=8,
                                                scaling="learned")),
    "parallel_up_down": ("parallel", dict(targets=("up", "down"), bottleneck_size=8,
                                          scaling=2.0)),
    "parallel_attention": ("parallel", dict(targets=("q", "v", "o"), bottleneck_size=4,
                                            non_linearity="relu")),
}


def _random_adapter(cfg, base, name, options, seed=0):
  adapter = adapters.build(name, options, cfg)
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  params = jax.jit(lambda b: spec.init_params(seed, b))(base)
  # Larger values than the N(0, 0.02) init, so a misplaced adapter shows in the logits.
  key = jax.random.PRNGKey(seed + 1)

  def perturb(path, x):
    name = str(path)
    if "adapter_down" in name or "adapter_up" in name:
      return 0.3 * jax.random.normal(jax.random.fold_in(key, zlib.crc32(name.encode())), x.shape)
    return x * 0.8 if "adapter_scaling" in name else x

  params = jax.tree_util.tree_map_with_path(perturb, params)
  return adapter, spec, jax.tree.map(np.asarray, params)


@pytest.mark.parametrize("case", list(CASES))
def test_model_matches_torch_hooks_through_the_fork_format(tmp_path, case):
  import torch
  model, _, cfg, base = ref.base_and_config()
  name, options = CASES[case]
  adapter, spec, params = _random_adapter(cfg, base, name, options)
  got = np.asarray(spec.merge(jax.tree.map(jnp.asarray, params))(jnp.asarray(TOKENS)))
  plain = np.asarray(spec_lib.from_params(cfg, base)(jnp.asarray(TOKENS)))
  assert np.max(np.abs(got - plain)) > 1e-2  # the adapter matters

  files = peft_io.write_adapter(tmp_path / case, spec, params)
  assert sorted(f.name for f in files) == ["adapter_config.json", "adapter_model.bin"]
  tensors = torch.load(tmp_path / case / "adapter_model.bin", weights_only=True)
  config = peft_io.read_config(tmp_path / case)
  assert config["peft_type"] == "BOTTLENECK"
  assert config["use_parallel_adapter"] == (name == "parallel")
  assert all(k.startswith("base_model.model.model.layers.") and "adapter_" in k
             for k in tensors)
  handles = ref.hook_bottleneck(model, {k: v.numpy() for k, v in tensors.items()},
                                type(adapter).placement, adapter.scaling, adapter.non_linearity)
  want = ref.torch_logits(model, TOKENS)
  for h in handles:
    h.remove()
  assert np.max(np.abs(got - want)) <= 1e-4, np.max(np.abs(got - want))

  # Import gives back the same adapter and the same values.
  read, read_params = peft_io.read_adapter(tmp_path / case, cfg)
  assert read == adapter
  jax.tree.map(np.testing.assert_array_equal, read_params, spec.saved_params(params))


@pytest.mark.parametrize("name", ["series", "parallel"])
def test_zero_up_projection_gives_the_base_model(name):
  _, _, cfg, base = ref.base_and_config()
  plain = np.asarray(spec_lib.from_params(cfg, base)(jnp.asarray(TOKENS)))
  targets = tuple(adapters.registry.TARGETS)
  for init in ("mam_adapter", "bert"):
    adapter = adapters.build(name, dict(targets=targets, bottleneck_size=4, init=init))
    spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
    params = jax.jit(lambda b, spec=spec: spec.init_params(0, b))(base)
    got = np.asarray(spec.merge(params)(jnp.asarray(TOKENS)))
    if init == "mam_adapter":  # U = 0: exactly the base
      np.testing.assert_array_equal(got, plain)
    else:  # LLM-Adapters' default: D and U ~ N(0, 0.02²), not the base at step 0
      assert np.max(np.abs(got - plain)) > 1e-6
      zeroed = jax.tree_util.tree_map_with_path(
          lambda p, x: jnp.zeros_like(x) if "adapter_up" in str(p) else x, params)
      np.testing.assert_array_equal(np.asarray(spec.merge(zeroed)(jnp.asarray(TOKENS))), plain)


def test_bert_init_statistics():
  _, _, cfg, _ = ref.base_and_config()
  adapter = adapters.build("parallel", dict(targets=("up", "down"), bottleneck_size=32))
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  params = jax.jit(lambda: spec.init_params(0))()
  for leaf in ("adapter_down", "adapter_up"):
    x = np.asarray(params["layers"]["ffn"]["up_proj"][leaf])
    assert abs(np.std(x) - 0.02) < 0.002 and abs(np.mean(x)) < 0.002
