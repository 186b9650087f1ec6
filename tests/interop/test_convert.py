"""Checkpoint conversion against HF transformers (CPU, float32) as the independent reference.

Covers: HF → llama_jax → HF bit-exact round trips (single file, sharded with index, bfloat16);
logit parity of converted models (GQA, tied embeddings, head_dim != d_model / n_heads, YaRN);
a Meta-layout checkpoint built here from an HF one (interleaved q/k rows, 2 model-parallel
shards) converting to HF's logits; llama_jax → HF exports loading in transformers; sharded
restore on 8 simulated devices; bad inputs failing with clear errors and leaving nothing behind.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from flax import nnx
from safetensors import safe_open

from llama_jax import convert
from llama_jax.checkpoints import converted as checkpoint_io
from llama_jax.checkpoints.converted import CheckpointError
from llama_jax.interop import hf as hf_format
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from llama_jax.parallel import logical_axes
from tests.references.hf_reference import hf_config, hf_logits, hf_model, hf_state

TOKENS = np.random.RandomState(0).randint(0, 128, (2, 13)).astype(np.int32)


def save_hf(model, path, shard_bytes=None):
  kwargs = {} if shard_bytes is None else {"max_shard_size": shard_bytes}
  model.save_pretrained(path, **kwargs)
  return path


def read_safetensors_dir(path) -> dict[str, np.ndarray]:
  """Every tensor of an HF directory, read with the safetensors library itself."""
  out = {}
  for file in sorted(os.listdir(path)):
    if file.endswith(".safetensors"):
      with safe_open(os.path.join(path, file), "pt") as f:
        for k in f.keys():
          out[k] = f.get_tensor(k)
  return out


def leftovers(parent, name):
  """Entries next to a destination that a conversion to `name` may have left behind."""
  return sorted(p for p in os.listdir(parent) if name in p)


@pytest.fixture(scope="module")
def gqa(tmp_path_factory):
  """A random 2-layer GQA HF model saved as single-file and as sharded-with-index checkpoints."""
  root = tmp_path_factory.mktemp("gqa")
  model = hf_model(hf_config())
  single = save_hf(model, root / "single")
  sharded = save_hf(model, root / "sharded", shard_bytes=40_000)
  assert (sharded / hf_format.INDEX).is_file() and not (single / hf_format.INDEX).exists()
  return model, single, sharded


# ------------------------------------------------------------------ HF → llama_jax → HF
@pytest.mark.parametrize("layout", ["single", "sharded"])
def test_hf_round_trip_is_bit_exact(gqa, layout, tmp_path):
  model, single, sharded = gqa
  src = single if layout == "single" else sharded
  convert.convert(src, tmp_path / "lj", "hf", "llama_jax")
  _, written = convert.convert(tmp_path / "lj", tmp_path / "hf", "llama_jax", "hf",
                               max_shard_bytes=30_000)
  assert (tmp_path / "hf" / hf_format.INDEX) in written  # re-sharded by our own limit
  ref = {k: v.detach() for k, v in model.state_dict().items()}
  got = read_safetensors_dir(tmp_path / "hf")
  assert sorted(got) == sorted(ref)
  for name, tensor in ref.items():
    assert got[name].dtype == tensor.dtype, name
    assert torch.equal(got[name], tensor), name
  index = json.loads((tmp_path / "hf" / hf_format.INDEX).read_text())
  assert sorted(index["weight_map"]) == sorted(ref)
  assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in ref.values())
  hf_cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
  for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "rms_norm_eps", "vocab_size", "tie_word_embeddings"):
    assert hf_cfg[key] == getattr(model.config, key), key


def test_bfloat16_round_trip_keeps_dtype_and_bits(tmp_path):
  model = hf_model(hf_config()).to(torch.bfloat16)
  save_hf(model, tmp_path / "src")
  cfg, _ = convert.convert(tmp_path / "src", tmp_path / "lj", "hf")
  assert cfg.param_dtype == "bfloat16" and convert.load_config(tmp_path / "lj") == cfg
  convert.convert(tmp_path / "lj", tmp_path / "hf", "llama_jax", "hf")
  got = read_safetensors_dir(tmp_path / "hf")
  for name, tensor in model.state_dict().items():
    assert got[name].dtype == torch.bfloat16 and torch.equal(got[name], tensor), name


def test_dtype_flag_casts(gqa, tmp_path):
  model, single, _ = gqa
  cfg, _ = convert.convert(single, tmp_path / "lj", "hf", dtype="bfloat16")
  params = convert.load_params(tmp_path / "lj")
  assert cfg.param_dtype == "bfloat16"
  assert all(str(x.dtype) == "bfloat16" for x in jax.tree.leaves(params))
  embed = model.state_dict()["model.embed_tokens.weight"].to(torch.bfloat16).float().numpy()
  np.testing.assert_array_equal(params["embed"].astype(np.float32), embed)


def test_export_dtype_cast_matches_torch_rounding(gqa, tmp_path):
  model, single, _ = gqa
  convert.convert(single, tmp_path / "lj", "hf")
  convert.convert(tmp_path / "lj", tmp_path / "hf", "llama_jax", "hf", dtype="bfloat16")
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["dtype"] == "bfloat16"
  got = read_safetensors_dir(tmp_path / "hf")
  for name, tensor in model.state_dict().items():
    assert torch.equal(got[name], tensor.to(torch.bfloat16)), name


def test_export_from_an_ocdbt_checkpoint_restores_first(gqa, tmp_path):
  """A params/ tree written by orbax's defaults (OCDBT) has no per-parameter zarr arrays to
  stream from; the export falls back to restoring it and gives the same tensors."""
  import orbax.checkpoint as ocp
  model, single, _ = gqa
  cfg, params = convert.read("hf", single)
  (tmp_path / "lj").mkdir()
  (tmp_path / "lj" / "model_config.json").write_text(json.dumps(cfg.to_dict()))
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(tmp_path / "lj" / "params", params)
  assert checkpoint_io.lazy_params(tmp_path / "lj") is None
  convert.convert(tmp_path / "lj", tmp_path / "hf", "llama_jax", "hf")
  got = read_safetensors_dir(tmp_path / "hf")
  for name, tensor in model.state_dict().items():
    assert torch.equal(got[name], tensor), name


# ------------------------------------------------------------------ logits parity
LOGIT_CASES = {
    "gqa": dict(),
    "tied": dict(tie_word_embeddings=True),
    "head_dim_32": dict(head_dim=32),  # != hidden_size / heads = 16
    "yarn": dict(rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                                  "original_max_position_embeddings": 8},
                 max_position_embeddings=32),
}


@pytest.mark.parametrize("case", sorted(LOGIT_CASES))
def test_converted_logits_match_hf(case, tmp_path):
  kwargs = dict(LOGIT_CASES[case])
  rope = kwargs.pop("rope_parameters", None)
  model = hf_model(hf_config(rope, **kwargs), seed=1)
  save_hf(model, tmp_path / "hf")
  cfg, _ = convert.convert(tmp_path / "hf", tmp_path / "lj", "hf")
  assert cfg.tie_embeddings == (case == "tied")
  assert cfg.head_dim == model.config.head_dim
  assert cfg.rope.rope_type == (rope or {}).get("rope_type", "default")
  ref = hf_logits(model, TOKENS)
  loaded = convert.load_model(tmp_path / "lj")
  assert np.abs(np.asarray(loaded(TOKENS)) - ref).max() <= 1e-4
  direct = convert.load_hf(tmp_path / "hf")
  assert np.abs(np.asarray(direct(TOKENS)) - ref).max() <= 1e-4


def test_package_exports_load_hf(gqa):
  import llama_jax
  model, single, _ = gqa
  lj = llama_jax.load_hf(single)
  assert isinstance(lj, llama_jax.Llama) and isinstance(lj.cfg, llama_jax.ModelConfig)
  logits = lj(TOKENS)
  assert logits.shape == (2, 13, 128) and logits.dtype == np.float32
  assert np.abs(np.asarray(logits) - hf_logits(model, TOKENS)).max() <= 1e-4


# ------------------------------------------------------------------ Meta consolidated.*.pth
def meta_rows(n_heads, head_dim):
  """meta_rows[r] = the HF row that Meta row r holds: within a head, Meta row 2i+p is HF row
  p*head_dim/2 + i (the interleaved vs rotate-half pairing of the RoPE reference)."""
  rows = np.empty(n_heads * head_dim, np.int64)
  for h in range(n_heads):
    for i in range(head_dim // 2):
      for p in range(2):
        rows[h * head_dim + 2 * i + p] = h * head_dim + p * head_dim // 2 + i
  return rows


def rope_interleaved(x, pos, theta):
  """Meta's RoPE in float64: adjacent pairs (x_2i, x_2i+1) times e^{j·pos·theta^(-2i/d)}."""
  d = x.shape[-1]
  freqs = theta ** (-np.arange(0, d, 2) / d)
  z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * pos[:, None, None] * freqs)
  return np.stack([z.real, z.imag], -1).reshape(x.shape)


def rope_half(x, pos, theta):
  """HF's rotate-half RoPE in float64: x_i paired with x_{i+d/2}."""
  d = x.shape[-1]
  ang = pos[:, None, None] * theta ** (-np.arange(0, d, 2) / d)
  cos, sin = np.concatenate([np.cos(ang)] * 2, -1), np.concatenate([np.sin(ang)] * 2, -1)
  return x * cos + np.concatenate([-x[..., d // 2:], x[..., :d // 2]], -1) * sin


META_SPLIT = {  # Meta name → (HF suffix, model-parallel split axis or None if replicated)
    "attention.wq.weight": ("self_attn.q_proj.weight", 0),
    "attention.wk.weight": ("self_attn.k_proj.weight", 0),
    "attention.wv.weight": ("self_attn.v_proj.weight", 0),
    "attention.wo.weight": ("self_attn.o_proj.weight", 1),
    "feed_forward.w1.weight": ("mlp.gate_proj.weight", 0),
    "feed_forward.w3.weight": ("mlp.up_proj.weight", 0),
    "feed_forward.w2.weight": ("mlp.down_proj.weight", 1),
    "attention_norm.weight": ("input_layernorm.weight", None),
    "ffn_norm.weight": ("post_attention_layernorm.weight", None),
}


@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory):
  """An HF model and the same weights as a Meta checkpoint with 2 model-parallel shards."""
  theta, n_shards = 20000.0, 2
  # multiple_of=32 makes LLaMA's SwiGLU size for dim 64 equal 192 (2/3·256=170 → 192).
  model = hf_model(hf_config({"rope_type": "default", "rope_theta": theta},
                             intermediate_size=192), seed=2)
  c = model.config
  hd = c.hidden_size // c.num_attention_heads
  state = {k: v.detach().clone() for k, v in model.state_dict().items()}
  q_rows, k_rows = meta_rows(c.num_attention_heads, hd), meta_rows(c.num_key_value_heads, hd)

  full = {"tok_embeddings.weight": (state["model.embed_tokens.weight"], 1),
          "norm.weight": (state["model.norm.weight"], None),
          "output.weight": (state["lm_head.weight"], 0)}
  for i in range(c.num_hidden_layers):
    for meta, (suffix, axis) in META_SPLIT.items():
      w = state[f"model.layers.{i}.{suffix}"]
      if meta == "attention.wq.weight":
        w = w[q_rows]
      elif meta == "attention.wk.weight":
        w = w[k_rows]
      full[f"layers.{i}.{meta}"] = (w, axis)

  root = tmp_path_factory.mktemp("meta")
  for rank in range(n_shards):
    shard = {"rope.freqs": torch.ones(hd // 2)}
    for name, (w, axis) in full.items():
      shard[name] = w.clone() if axis is None else w.chunk(n_shards, dim=axis)[rank].clone()
    torch.save(shard, root / f"consolidated.{rank:02d}.pth")
  params = {"dim": c.hidden_size, "n_layers": c.num_hidden_layers,
            "n_heads": c.num_attention_heads, "n_kv_heads": c.num_key_value_heads,
            "vocab_size": -1, "multiple_of": 32, "norm_eps": c.rms_norm_eps,
            "rope_theta": theta, "max_seq_len": c.max_position_embeddings}
  (root / "params.json").write_text(json.dumps(params))
  return model, root, full, theta


def test_meta_fixture_is_in_interleaved_layout(meta_ckpt):
  """The fixture itself, checked against the RoPE formulas: interleaved RoPE on Meta's wq/wk
  gives the same attention scores as rotate-half RoPE on HF's (independent of the converter)."""
  model, _, full, theta = meta_ckpt
  c = model.config
  h, k, hd = c.num_attention_heads, c.num_key_value_heads, c.hidden_size // c.num_attention_heads
  state = hf_state(model)
  rng = np.random.RandomState(3)
  x, pos = rng.randn(7, c.hidden_size), np.arange(7) * 5.0

  def scores(wq, wk, rope):
    q = rope((x @ wq.T).reshape(7, h, hd), pos, theta)
    kk = rope((x @ wk.T).reshape(7, k, hd), pos, theta)
    return np.einsum("thd,shd->hts", q, np.repeat(kk, h // k, axis=1))

  meta = scores(full["layers.0.attention.wq.weight"][0].double().numpy(),
                full["layers.0.attention.wk.weight"][0].double().numpy(), rope_interleaved)
  hf = scores(state["model.layers.0.self_attn.q_proj.weight"].astype(np.float64),
              state["model.layers.0.self_attn.k_proj.weight"].astype(np.float64), rope_half)
  np.testing.assert_allclose(meta, hf, rtol=1e-10, atol=1e-10)


def test_meta_checkpoint_converts_to_hf_logits(meta_ckpt, tmp_path):
  model, root, _, theta = meta_ckpt
  cfg, _ = convert.convert(root, tmp_path / "lj", "meta")
  assert (cfg.vocab_size, cfg.ffn_dim, cfg.rope.rope_theta) == (128, 192, theta)
  assert cfg.max_position_embeddings == model.config.max_position_embeddings
  got = np.asarray(convert.load_model(tmp_path / "lj")(TOKENS))
  assert np.abs(got - hf_logits(model, TOKENS)).max() <= 1e-4
  # Meta → HF goes through the same reader: the export equals the original HF weights.
  convert.convert(root, tmp_path / "hf", "meta", "hf")
  got_hf = read_safetensors_dir(tmp_path / "hf")
  for name, tensor in model.state_dict().items():
    assert torch.equal(got_hf[name], tensor), name


def write_meta(root, full, params, n_shards=2, dtype=torch.float32):
  """Splits full-size Meta tensors ({name: (tensor, split axis)}) into model-parallel shards."""
  root.mkdir()
  for rank in range(n_shards):
    shard = {name: (w if axis is None else w.chunk(n_shards, dim=axis)[rank]).to(dtype).clone()
             for name, (w, axis) in full.items()}
    torch.save(shard, root / f"consolidated.{rank:02d}.pth")
  (root / "params.json").write_text(json.dumps(params))
  return root


def test_meta_bfloat16_shards_keep_bits(meta_ckpt, tmp_path):
  """bfloat16 shards (NumPy has no bfloat16: the bits are reinterpreted) survive exactly."""
  model, root, full, _ = meta_ckpt
  params = json.loads((root / "params.json").read_text())
  src = write_meta(tmp_path / "meta", full, params, dtype=torch.bfloat16)
  cfg, _ = convert.convert(src, tmp_path / "hf", "meta", "hf")
  assert cfg.param_dtype == "bfloat16"
  got = read_safetensors_dir(tmp_path / "hf")
  for name, tensor in model.state_dict().items():
    assert torch.equal(got[name], tensor.to(torch.bfloat16)), name


def test_meta_llama3_scaled_rope_params(meta_ckpt, tmp_path):
  """params.json use_scaled_rope → rope_type llama3 with Llama 3.1's published constants
  (factor 8, low/high frequency factors 1/4, original context 8192)."""
  _, root, full, _ = meta_ckpt
  params = dict(json.loads((root / "params.json").read_text()), rope_theta=500000.0,
                use_scaled_rope=True, max_seq_len=16384)
  cfg, _ = convert.convert(write_meta(tmp_path / "meta", full, params), tmp_path / "lj", "meta")
  r = cfg.rope
  assert (r.rope_type, r.rope_theta, r.factor, r.low_freq_factor, r.high_freq_factor,
          r.original_max_position_embeddings) == ("llama3", 500000.0, 8.0, 1.0, 4.0, 8192)
  params["vocab_dim"] = 1
  (tmp_path / "meta" / "params.json").write_text(json.dumps(params))
  with pytest.raises(CheckpointError, match=r"params.json: unknown field\(s\) \['vocab_dim'\]"):
    convert.convert(tmp_path / "meta", tmp_path / "lj2", "meta")


def test_meta_errors(meta_ckpt, tmp_path):
  _, root, _, _ = meta_ckpt
  src = tmp_path / "meta"
  shutil.copytree(root, src)
  params = json.loads((src / "params.json").read_text())
  del params["max_seq_len"]
  (src / "params.json").write_text(json.dumps(params))
  with pytest.raises(CheckpointError, match="max_seq_len.*--max_position_embeddings"):
    convert.convert(src, tmp_path / "out", "meta")
  cfg, _ = convert.convert(src, tmp_path / "out", "meta", max_position_embeddings=48)
  assert cfg.max_position_embeddings == 48
  os.remove(src / "consolidated.01.pth")
  with pytest.raises(CheckpointError, match=r"1 shard file\(s\) sum to width 32 but params.json "
                     "dim=64"):
    convert.convert(src, tmp_path / "out2", "meta", max_position_embeddings=48)
  shutil.copy(root / "consolidated.01.pth", src / "consolidated.02.pth")
  with pytest.raises(CheckpointError, match=r"missing shard file\(s\) \['consolidated.01.pth'\]"):
    convert.convert(src, tmp_path / "out2", "meta", max_position_embeddings=48)
  assert leftovers(tmp_path, "out2") == []


# ------------------------------------------------------------------ llama_jax → HF
@pytest.mark.parametrize("name,rope", [
    ("tiny", {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 2.0,
              "original_max_position_embeddings": 128, "beta_fast": 16.0}),
    ("tiny_wide_heads", None),
])
def test_native_export_loads_in_transformers(name, rope, tmp_path):
  from transformers import LlamaForCausalLM
  overrides = {"tie_embeddings": True} if name == "tiny_wide_heads" else {}
  if rope:
    overrides["rope"] = dict(rope, max_position_embeddings=256)
  cfg = preset(name, **overrides)
  rng = np.random.RandomState(4)  # random norms too, so a mix-up of scales cannot hide
  params = jax.tree_util.tree_map_with_path(
      lambda path, a: ((1.0 if "norm" in jax.tree_util.keystr(path) else 0.0)
                       + 0.1 * rng.randn(*a.shape)).astype(np.float32),
      checkpoint_io.expected_tree(cfg))
  convert.save_converted(tmp_path / "lj", cfg, params)
  ours = np.asarray(convert.load_model(tmp_path / "lj")(TOKENS))
  _, written = convert.convert(tmp_path / "lj", tmp_path / "hf", "llama_jax", "hf",
                               max_shard_bytes=100_000)
  assert len([p for p in written if p.suffix == ".safetensors"]) > 1
  hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
  assert hf.config.rope_parameters["rope_type"] == (rope or {}).get("rope_type", "default")
  assert np.abs(hf_logits(hf, TOKENS) - ours).max() <= 1e-4


# ------------------------------------------------------------------ sharded restore
def test_load_params_restores_into_shardings(gqa, tmp_path):
  model, single, _ = gqa
  cfg, _ = convert.convert(single, tmp_path / "lj", "hf")
  host = convert.load_params(tmp_path / "lj")
  assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(host))
  mesh = jax.make_mesh((1, 4, 2, 1), ("data", "fsdp", "tensor", "sequence"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 4)
  state = nnx.state(spec_lib.abstract(cfg), nnx.Param)
  shardings = jax.tree.map(
      lambda v: jax.sharding.NamedSharding(mesh, logical_axes.spec(
          v.get_metadata()["logical_axes"], logical_axes.DEFAULT_RULES)),
      state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  params = convert.load_params(tmp_path / "lj", shardings=shardings)
  q = params["layers"]["attention"]["q"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert len(q.addressable_shards) == 8
  assert q.addressable_shards[0].data.shape == (2, 16, 2, 16)  # [L, D/4, H/2, hd]
  for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                               jax.tree.leaves(host)):
    assert len(got.sharding.device_set) == 8, path
    np.testing.assert_array_equal(np.asarray(got), want)
  # The model runs on the sharded parameters and still matches HF.
  with jax.set_mesh(mesh):
    logits = spec_lib.from_params(cfg, params)(TOKENS)
  assert np.abs(np.asarray(logits) - hf_logits(model, TOKENS)).max() <= 1e-4
  # One sharding for every leaf, with a dtype cast while reading.
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  bf16 = convert.load_params(tmp_path / "lj", cfg.replace(param_dtype="bfloat16"), replicated)
  assert bf16["embed"].dtype == jax.numpy.bfloat16 and bf16["embed"].sharding == replicated
  with pytest.raises(CheckpointError, match="parameter embed has shape"):
    convert.load_params(tmp_path / "lj", cfg.replace(vocab_size=256))


# ------------------------------------------------------------------ bad inputs
def corrupt_copy(src, dst, edit):
  shutil.copytree(src, dst)
  edit(dst)
  return dst


def truncate_shard(d):
  shard = d / "model-00002-of-00012.safetensors"
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) // 2])


def edit_config(**changes):
  def edit(d):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))
  return edit


BAD_HF = {
    "missing_shard": (lambda d: os.remove(d / "model-00003-of-00012.safetensors"),
                      r"shard file\(s\) \['model-00003-of-00012.safetensors'\] listed in .*"
                      r"model.safetensors.index.json are missing"),
    "truncated_shard": (truncate_shard,
                        r"shard .*model-00002-of-00012.safetensors cannot be read \(truncated"),
    "shape_vs_config": (edit_config(intermediate_size=128),
                        r"tensor model.layers.0.mlp.gate_proj.weight in model-000\d\d-of-00012"
                        r".safetensors has shape \(96, 64\) but .*config.json implies \(128, 64\)"),
    "unknown_rope_type": (edit_config(rope_parameters={"rope_type": "spiral",
                                                       "rope_theta": 10000.0}),
                          r"config.json: rope.rope_type='spiral' is not a known RoPE method; "
                          r"allowed: \[.*'yarn'\]"),
    "no_weights": (lambda d: [os.remove(p) for p in d.glob("model*")],
                   r"no model.safetensors or model.safetensors.index.json in"),
}


@pytest.mark.parametrize("case", sorted(BAD_HF))
def test_bad_hf_input_fails_clearly_and_leaves_nothing(gqa, case, tmp_path):
  _, _, sharded = gqa
  assert len(list(sharded.glob("model-*-of-00012.safetensors"))) == 12
  edit, message = BAD_HF[case]
  src = corrupt_copy(sharded, tmp_path / "src", edit)
  with pytest.raises(CheckpointError, match=message):
    convert.convert(src, tmp_path / "dst", "hf")
  assert leftovers(tmp_path, "dst") == []
  # An existing destination survives a failed --overwrite conversion untouched.
  (tmp_path / "dst").mkdir()
  (tmp_path / "dst" / "keep.txt").write_text("old")
  with pytest.raises(CheckpointError):
    convert.convert(src, tmp_path / "dst", "hf", overwrite=True)
  assert leftovers(tmp_path, "dst") == ["dst"]
  assert os.listdir(tmp_path / "dst") == ["keep.txt"]


def test_inv_freq_buffers_are_ignored_unknown_tensors_are_not(gqa, tmp_path):
  from safetensors.torch import load_file, save_file
  model, single, _ = gqa
  src = tmp_path / "src"
  shutil.copytree(single, src)
  tensors = load_file(src / "model.safetensors")
  tensors["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)  # old conversions
  save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
  convert.convert(src, tmp_path / "lj", "hf")
  got = np.asarray(convert.load_model(tmp_path / "lj")(TOKENS))
  assert np.abs(got - hf_logits(model, TOKENS)).max() <= 1e-4
  tensors["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(64)
  save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
  with pytest.raises(CheckpointError, match=r"tensor\(s\) \['model.layers.0.self_attn.q_proj."
                     r"bias'\] are not part of a LlamaForCausalLM"):
    convert.convert(src, tmp_path / "lj2", "hf")


def test_existing_destination_needs_overwrite(gqa, tmp_path):
  _, single, _ = gqa
  dst = tmp_path / "dst"
  dst.mkdir()
  (dst / "keep.txt").write_text("old")
  with pytest.raises(CheckpointError, match=r"destination .*dst already exists; pass --overwrite"):
    convert.convert(single, dst, "hf")
  assert os.listdir(dst) == ["keep.txt"]
  convert.convert(single, dst, "hf", overwrite=True)
  assert sorted(os.listdir(dst)) == ["model_config.json", "params"]
  assert leftovers(tmp_path, "dst") == ["dst"]
  with pytest.raises(CheckpointError, match="overwrite or sit inside the source"):
    convert.convert(single, single, "hf", overwrite=True)


def test_bad_params_are_refused_before_writing(gqa, tmp_path):
  _, single, _ = gqa
  cfg, params = convert.read("hf", single)
  params["layers"]["ffn"]["down"] = params["layers"]["ffn"]["down"][:, :-1]
  message = r"parameter layers/ffn/down has shape \(2, 95, 64\) but the model config implies " \
            r"\(2, 96, 64\)"
  with pytest.raises(CheckpointError, match="params to export: " + message):
    hf_format.write_hf(tmp_path / "dst", cfg, params)
  with pytest.raises(CheckpointError, match="params to save: " + message):
    convert.save_converted(tmp_path / "dst", cfg, params)
  assert leftovers(tmp_path, "dst") == []


def test_failure_mid_write_leaves_nothing(gqa, tmp_path, monkeypatch):
  """An error after shard bytes are on disk (a full disk, say) still leaves no destination."""
  _, single, _ = gqa
  cfg, params = convert.read("hf", single)
  real = hf_format.weights.params_to_hf
  seen = []

  def failing(cfg, params):
    for i, item in enumerate(real(cfg, params)):
      if i == 7:
        raise OSError("No space left on device")
      seen.append(item[0])
      yield item

  monkeypatch.setattr(hf_format.weights, "params_to_hf", failing)
  with pytest.raises(OSError, match="No space left"):
    hf_format.write_hf(tmp_path / "dst", cfg, params, max_shard_bytes=20_000)
  assert len(seen) == 7 and leftovers(tmp_path, "dst") == []


def test_not_a_converted_checkpoint(gqa, tmp_path):
  _, single, _ = gqa
  with pytest.raises(CheckpointError, match="HF model directory.*convert it first: python -m "
                     "llama_jax.convert --from=hf"):
    convert.load_model(single)
  with pytest.raises(CheckpointError, match="model_config.json not found.*python -m "
                     "llama_jax.convert"):
    checkpoint_io.load_config(single)
  with pytest.raises(CheckpointError, match="does not exist"):
    convert.load_config(tmp_path / "nope")


def test_parse_size():
  assert convert.parse_size("5GB") == 5 * 10**9
  assert convert.parse_size("500MiB") == 500 * 2**20
  assert convert.parse_size("1.5kb") == 1500
  assert convert.parse_size("123") == 123
  with pytest.raises(CheckpointError, match="max_shard_size"):
    convert.parse_size("five")


# ------------------------------------------------------------------ CLI
def test_cli(gqa, tmp_path):
  model, _, sharded = gqa
  dst = tmp_path / "out"
  cmd = [sys.executable, "-m", "llama_jax.convert", "--from=hf", "--to=llama_jax",
         f"--src={sharded}", f"--dst={dst}", "--dtype=bfloat16"]
  run = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  assert "converted hf" in run.stdout and "wrote model_config.json" in run.stdout
  assert "wrote params/" in run.stdout and "bfloat16" in run.stdout
  cfg = convert.load_config(dst)
  assert cfg.param_dtype == "bfloat16" and cfg.n_kv_heads == 2
  n = sum(math.prod(v.shape) for v in model.state_dict().values())
  assert sum(x.size for x in jax.tree.leaves(convert.load_params(dst))) == n


# ------------------------------------------------------------------ searched RoPE factors → HF
def test_searched_rope_factors_export_to_hf(gqa, tmp_path):
  """`convert --rope_json` writes a search's rope.json into the HF config: transformers' own
  longrope then gives the logits of our model with the same factors."""
  from transformers import LlamaForCausalLM

  from llama_jax.core import cli
  from llama_jax.rope.config import read_json
  from llama_jax.search import factors
  _, single, _ = gqa
  lam = np.linspace(1.0, 3.5, 8)  # head_dim 16: 8 pairs, non-monotone end to catch reordering
  lam[-1] = 2.0
  (tmp_path / "rope.json").write_text(json.dumps(factors.rope_parameters(lam, 4.0, 64, 1e4)))
  assert cli.main(convert.PROGRAM, ["convert", "--from=hf", "--to=hf", f"--src={single}",
                                    f"--dst={tmp_path / 'hf'}",
                                    f"--rope_json={tmp_path / 'rope.json'}"]) == 0
  hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
  assert hf.config.rope_parameters["rope_type"] == "longrope"
  np.testing.assert_allclose(hf.config.rope_parameters["long_factor"], lam)
  ours = convert.load_hf(single)
  ours = spec_lib.from_params(
      ours.cfg.replace(rope=convert.load_hf(tmp_path / "hf").cfg.rope),
      jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(ours, nnx.Param))))
  assert np.abs(hf_logits(hf, TOKENS) - np.asarray(ours(TOKENS))).max() <= 1e-4
  # A λ of the wrong length is refused before anything is read or written.
  bad = read_json(str(tmp_path / "rope.json"))
  bad["long_factor"] = bad["short_factor"] = [1.0] * 5
  with pytest.raises(ValueError, match=r"--rope_json does not fit the model: rope.short_factor "
                                       r"has 5 entries; it needs head_dim/2 = 8"):
    convert.convert(single, tmp_path / "bad", "hf", "hf", rope=bad)
  assert leftovers(tmp_path, "bad") == []
