"""Mesh validation, mesh creation, shardings from logical axes, batch assembly (8 CPU devices)."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import DEFAULT_RULES

CFG = preset("tiny")  # d_model 64, 2 layers, 4 heads, 2 kv heads, ffn 128, vocab 256


def mesh_of(**axes):
  return mesh_lib.make_mesh(dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **axes))


# ------------------------------------------------------------------------------ validation
def test_validate_mesh_accepts_and_fills_minus_one():
  sizes = mesh_lib.validate_mesh(dict(data=-1, fsdp=2, tensor=2, sequence=1), 8, CFG,
                                 batch_size=8, seq_len=16)
  assert sizes == dict(data=2, fsdp=2, tensor=2, sequence=1)


def test_validate_mesh_product_must_equal_devices():
  with pytest.raises(ValueError, match=r"mesh data=3 x fsdp=1 x tensor=1 x sequence=1 has 3 "
                     r"devices but 8 are available"):
    mesh_lib.validate_mesh(dict(data=3, fsdp=1, tensor=1, sequence=1), 8, CFG, 8, 16)
  with pytest.raises(ValueError, match=r"mesh.data=-1 cannot be filled.*multiply to 3.*"
                     r"\[1, 2, 4, 8\]"):
    mesh_lib.validate_mesh(dict(data=-1, fsdp=3, tensor=1, sequence=1), 8, CFG, 8, 16)


def test_validate_mesh_rejects_bad_axis_values():
  with pytest.raises(ValueError, match=r"mesh.fsdp=0; allowed: an integer >= 1, or -1"):
    mesh_lib.validate_mesh(dict(data=8, fsdp=0, tensor=1, sequence=1), 8, CFG, 8, 16)
  with pytest.raises(ValueError, match=r"mesh axes \['mesh.data', 'mesh.fsdp'\] are all -1"):
    mesh_lib.validate_mesh(dict(data=-1, fsdp=-1, tensor=1, sequence=1), 8, CFG, 8, 16)
  with pytest.raises(ValueError, match=r"unknown axes \['model'\]"):
    mesh_lib.validate_mesh(dict(data=8, model=1), 8, CFG, 8, 16)


def test_validate_mesh_heads_must_divide_tensor():
  # 6 hypothetical devices: tensor=3 does not divide n_heads=4.
  with pytest.raises(ValueError, match=r"mesh.tensor=3 does not divide model.n_heads=4 .*"
                     r"'heads' to 'tensor'.*allowed mesh.tensor values: \[1, 2, 4\]"):
    mesh_lib.validate_mesh(dict(data=2, fsdp=1, tensor=3, sequence=1), 6, CFG, 8, 16)
  # tensor=4 divides n_heads=4 but not n_kv_heads=2.
  with pytest.raises(ValueError, match=r"mesh.tensor=4 does not divide model.n_kv_heads=2.*"
                     r"\[1, 2\]"):
    mesh_lib.validate_mesh(dict(data=2, fsdp=1, tensor=4, sequence=1), 8, CFG, 8, 16)


def test_validate_mesh_batch_and_length():
  with pytest.raises(ValueError, match=r"batch_size=6 is not divisible by mesh.data=4 x "
                     r"mesh.fsdp=2 = 8"):
    mesh_lib.validate_mesh(dict(data=4, fsdp=2, tensor=1, sequence=1), 8, CFG, 6, 16)
  with pytest.raises(ValueError, match=r"micro-batch batch_size/grad_accum=16/4=4 is not "
                     r"divisible by mesh.data=8"):
    mesh_lib.validate_mesh(dict(data=8, fsdp=1, tensor=1, sequence=1), 8, CFG, 16, 16,
                           grad_accum=4)
  with pytest.raises(ValueError, match=r"mesh.sequence=4 does not divide seq_len=10.*"
                     r"\[1, 2, 5, 10\]"):
    mesh_lib.validate_mesh(dict(data=2, fsdp=1, tensor=1, sequence=4), 8, CFG, 8, 10)


def test_validate_mesh_d_model_by_fsdp_follows_the_rules():
  cfg = preset("tiny", d_model=48, n_heads=4, n_kv_heads=2)  # head_dim 12
  with pytest.raises(ValueError, match=r"mesh.fsdp=32 does not divide model.d_model=48.*"
                     r"'embed' to 'fsdp'"):
    mesh_lib.validate_mesh(dict(data=1, fsdp=32, tensor=1, sequence=1), 32, cfg, 64, 16)
  # With embed replicated (pure data parallelism over fsdp for activations) it is allowed.
  rules = tuple((k, None) if k == "embed" else (k, v) for k, v in DEFAULT_RULES)
  mesh_lib.validate_mesh(dict(data=1, fsdp=32, tensor=1, sequence=1), 32, cfg, 64, 16,
                         rules=rules)


# ------------------------------------------------------------------------------ mesh
def test_make_mesh_axes_and_types():
  mesh = mesh_lib.make_mesh(dict(data=2, fsdp=-1, tensor=2, sequence=1))
  assert mesh.axis_names == ("data", "fsdp", "tensor", "sequence")
  assert dict(mesh.shape) == dict(data=2, fsdp=2, tensor=2, sequence=1)
  assert tuple(mesh.axis_types) == (AxisType.Auto,) * 4
  assert mesh.devices.size == 8
  sub = mesh_lib.make_mesh(dict(data=-1), devices=jax.devices()[:2])
  assert dict(sub.shape)["data"] == 2


# ------------------------------------------------------------------------------ pytrees
def _train_state_init(pure_dict: bool):
  def init():
    params = nnx.state(model_lib.init(CFG, seed=0), nnx.Param)
    if pure_dict:
      params = nnx.to_pure_dict(params)
    return {"params": params, "opt": optax.adamw(1e-3).init(params),
            "step": jnp.zeros((), jnp.int32), "rng": jax.random.key(0)}
  return init


# Expected layouts under DEFAULT_RULES, written out by hand from the model's logical axes.
EXPECTED = {
    "embed": P("tensor", "fsdp"),
    "layers/attention/q": P(None, "fsdp", "tensor", None),
    "layers/attention/k": P(None, "fsdp", "tensor", None),
    "layers/attention/o": P(None, "tensor", None, "fsdp"),
    "layers/ffn/gate": P(None, "fsdp", "tensor"),
    "layers/ffn/down": P(None, "tensor", "fsdp"),
    "layers/attention_norm/scale": P(None, None),
    "norm/scale": P(None),
    "lm_head": P("tensor", "fsdp"),
}


def _specs_by_path(shardings):
  out = {}
  for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]:
    keys = [str(k.key) if isinstance(k, jax.tree_util.DictKey) else
            str(getattr(k, "name", getattr(k, "idx", k))) for k in path]
    keys = [k for k in keys if k != "value"]
    out["/".join(keys)] = s.spec
  return out


@pytest.mark.parametrize("pure_dict", [False, True])
def test_tree_shardings_from_logical_axes(pure_dict):
  mesh = mesh_of(data=2, fsdp=4)
  abstract = jax.eval_shape(_train_state_init(pure_dict))
  extra = spec_lib.abstract(CFG) if pure_dict else None
  shardings = sharding.tree_shardings(abstract, mesh, DEFAULT_RULES, param_axes=extra)
  assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
  specs = _specs_by_path(shardings)
  for path, spec in EXPECTED.items():
    assert specs["params/" + path] == spec, path
    assert specs["opt/0/mu/" + path] == spec, path  # optimizer moments mirror the params
    assert specs["opt/0/nu/" + path] == spec, path
  assert specs["opt/0/count"] == P()
  assert specs["step"] == P() and specs["rng"] == P()


def test_tree_shardings_pure_dict_without_axes_is_replicated():
  mesh = mesh_of(data=2, fsdp=4)
  abstract = jax.eval_shape(_train_state_init(True))
  specs = _specs_by_path(sharding.tree_shardings(abstract, mesh, DEFAULT_RULES))
  assert specs["params/embed"] == P()


def test_sharded_init_bytes_per_device():
  mesh = mesh_of(data=2, fsdp=4)
  # Same tree as the model's state, but filled without the model's random initialiser, whose
  # compilation alone takes >10 s on a 2-core machine; what is tested here is the layout.
  param_shapes = jax.eval_shape(lambda: nnx.state(model_lib.init(CFG), nnx.Param))

  def init():
    params = jax.tree.map(lambda a: jnp.full(a.shape, 0.5, a.dtype), param_shapes)
    return {"params": params, "opt": optax.adamw(1e-3).init(params),
            "step": jnp.zeros((), jnp.int32)}

  abstract = jax.eval_shape(init)
  shardings = sharding.tree_shardings(abstract, mesh, DEFAULT_RULES)
  state = jax.jit(init, out_shardings=shardings)()
  params = state["params"]
  for path, spec in EXPECTED.items():
    leaf = params
    for k in path.split("/"):
      leaf = leaf[k]
    assert leaf[...].sharding.spec == spec
  # Independent expectation: every matrix is split 4 ways over fsdp (tensor=1); norms replicated.
  total, expected = 0, 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    total += leaf.nbytes
    expected += leaf.nbytes if "norm" in jax.tree_util.keystr(path) else leaf.nbytes // 4
  per_device = sharding.bytes_per_device(params)
  assert len(per_device) == 8
  assert set(per_device.values()) == {expected}
  assert abs(expected - total / 4) / (total / 4) < 0.02  # norms are ~1% of this tiny model
  # Whole state: Adam moments are sharded like the params (3 copies), counters replicated.
  state_bytes = sharding.bytes_per_device(state)
  assert min(state_bytes.values()) < 1.02 * sum(x.nbytes for x in jax.tree.leaves(state)) / 4


def test_tensor_parallel_layout():
  mesh = mesh_of(fsdp=2, tensor=4)
  cfg = preset("tiny", n_kv_heads=4)
  abstract = jax.eval_shape(lambda: nnx.state(model_lib.init(cfg), nnx.Param))
  shardings = sharding.tree_shardings(abstract, mesh, DEFAULT_RULES)
  l, d, h, hd, f, v = (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.ffn_dim,
                       cfg.vocab_size)
  expected_shard_shapes = {  # fsdp=2 splits embed, tensor=4 splits heads/mlp/vocab
      "q": (l, d // 2, h // 4, hd), "o": (l, h // 4, hd, d // 2),
      "gate": (l, d // 2, f // 4), "down": (l, f // 4, d // 2),
      "embed": (v // 4, d // 2), "lm_head": (v // 4, d // 2)}
  got = {
      "q": shardings["layers"]["attention"]["q"].get_value().shard_shape((l, d, h, hd)),
      "o": shardings["layers"]["attention"]["o"].get_value().shard_shape((l, h, hd, d)),
      "gate": shardings["layers"]["ffn"]["gate"].get_value().shard_shape((l, d, f)),
      "down": shardings["layers"]["ffn"]["down"].get_value().shard_shape((l, f, d)),
      "embed": shardings["embed"].get_value().shard_shape((v, d)),
      "lm_head": shardings["lm_head"].get_value().shard_shape((v, d))}
  assert got == expected_shard_shapes


def test_non_dividing_axis_is_dropped():
  mesh = mesh_of(fsdp=4, tensor=2)
  s = sharding.logical_sharding(("vocab", "embed"), (5, 8), mesh, DEFAULT_RULES)
  assert s.spec == P(None, "fsdp")
  with pytest.raises(ValueError, match="do not match the array rank"):
    sharding.logical_sharding(("vocab",), (5, 8), mesh, DEFAULT_RULES)


def test_with_shardings_carries_them():
  mesh = mesh_of(data=8)
  abstract = {"w": jax.ShapeDtypeStruct((8, 4), jnp.float32)}
  sh = {"w": sharding.batch_sharding(mesh, DEFAULT_RULES)}
  out = sharding.with_shardings(abstract, sh)
  assert out["w"].sharding == sh["w"] and out["w"].shape == (8, 4)


# ------------------------------------------------------------------------------ batches
def test_batch_sharding_and_global_batch():
  mesh = mesh_of(data=2, fsdp=2, sequence=2)
  bs = sharding.batch_sharding(mesh, DEFAULT_RULES)
  assert bs.spec == P(("data", "fsdp"), "sequence")
  rng = np.random.default_rng(0)
  local = {"tokens": rng.integers(0, 100, (8, 6), dtype=np.int32),
           "loss_mask": rng.random((8, 6), dtype=np.float32),
           "doc_ids": np.arange(8, dtype=np.int32)}
  out = sharding.global_batch(local, mesh, DEFAULT_RULES)
  assert out["tokens"].shape == (8, 6) and out["tokens"].sharding.spec == bs.spec
  assert out["doc_ids"].sharding.spec == P(("data", "fsdp"))
  for name, array in local.items():
    np.testing.assert_array_equal(np.asarray(out[name]), array)
  # Each device holds exactly its slice: rows by (data, fsdp), columns by sequence.
  for shard in out["tokens"].addressable_shards:
    np.testing.assert_array_equal(np.asarray(shard.data), local["tokens"][shard.index])
    assert shard.data.shape == (2, 3)


def test_global_batch_rejects_bad_rows():
  mesh = mesh_of(data=8)
  with pytest.raises(ValueError, match=r"batch\['tokens'\] has 6 rows.*not divisible by the 8"):
    sharding.global_batch({"tokens": np.zeros((6, 4), np.int32)}, mesh, DEFAULT_RULES)


def test_bytes_per_device_counts_shards():
  mesh = mesh_of(data=8)
  x = jax.device_put(jnp.zeros((16, 4), jnp.float32), sharding.batch_sharding(mesh,
                                                                             DEFAULT_RULES))
  y = jnp.zeros((3,), jnp.float32)  # one device only
  counts = sharding.bytes_per_device({"x": x, "y": y})
  assert counts[jax.devices()[0]] == 2 * 4 * 4 + 12
  assert all(counts[d] == 32 for d in jax.devices()[1:])
  assert math.isclose(sum(counts.values()), x.nbytes + y.nbytes)
