"""ModelConfig: presets against the papers' numbers, HF config round trip, validation messages."""
import pytest

from llama_jax.model.config import PRESETS, ModelConfig, llama_ffn_dim, preset
from llama_jax.rope import RopeConfig


@pytest.mark.parametrize("name,params", [
    ("llama_7b", 6_738_415_616), ("llama_13b", 13_015_864_320), ("llama2_7b", 6_738_415_616),
    ("llama2_13b", 13_015_864_320)])
def test_preset_parameter_counts_match_the_released_checkpoints(name, params):
  assert preset(name).num_params() == params


@pytest.mark.parametrize("d_model,mult,multiple_of,ffn", [
    (4096, None, 256, 11008), (5120, None, 256, 13824), (6656, None, 256, 17920),
    (8192, None, 256, 22016), (8192, 1.3, 4096, 28672)])
def test_swiglu_hidden_size_rule(d_model, mult, multiple_of, ffn):
  assert llama_ffn_dim(d_model, multiple_of, mult) == ffn


def test_presets_follow_the_paper_tables():
  for name, ffn in [("llama_7b", 11008), ("llama_13b", 13824), ("llama_33b", 17920),
                    ("llama_65b", 22016), ("llama2_70b", 28672)]:
    assert PRESETS[name].ffn_dim == ffn
    assert PRESETS[name].head_dim == 128
  assert PRESETS["llama2_70b"].n_kv_heads == 8
  assert PRESETS["llama_7b"].norm_eps == 1e-6 and PRESETS["llama2_7b"].norm_eps == 1e-5
  assert PRESETS["llama2_7b"].max_position_embeddings == 4096
  assert PRESETS["llama3_1_8b"].rope.rope_type == "llama3"


@pytest.mark.parametrize("name,seq,gflops", [
    ("llama2_7b", 2048, 41.3), ("llama2_7b", 4096, 42.9), ("llama2_13b", 4096, 82.1),
    ("llama2_70b", 4096, 428.0), ("llama3_1_8b", 8192, 51.5)])
def test_training_flops_per_token_use_the_causal_convention(name, seq, gflops):
  assert preset(name).flops_per_token(seq) / 1e9 == pytest.approx(gflops, rel=3e-3)


def test_hf_config_round_trip():
  from transformers import LlamaConfig
  cfg = preset("llama3_1_8b")
  hf = LlamaConfig(**cfg.to_hf())
  back = ModelConfig.from_hf(hf.to_dict())
  assert back == cfg


def test_dict_round_trip_keeps_rope_vectors():
  cfg = preset("tiny", rope=RopeConfig("longrope", short_factor=(1.0,) * 8,
                                       long_factor=(2.0,) * 8,
                                       original_max_position_embeddings=64))
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_changing_max_length_keeps_rope_in_step():
  cfg = preset("tiny").replace(max_position_embeddings=1024)
  assert cfg.rope.max_position_embeddings == 1024


@pytest.mark.parametrize("overrides,match", [
    (dict(n_kv_heads=3), r"n_kv_heads=3 must divide n_heads=4"),
    (dict(d_model=65, head_dim=None), r"head_dim is None and d_model=65"),
    (dict(dtype="float8"), r"model\.dtype='float8'; allowed: \['float32', 'bfloat16'"),
    (dict(attention="flash"), r"model\.attention='flash'; allowed"),
    (dict(remat="some"), r"model\.remat='some'; allowed"),
    (dict(n_layers=0), r"model\.n_layers=0 must be a positive integer"),
    (dict(head_dim=15), r"head_dim=15 must be even"),
    (dict(rope=RopeConfig("yarn")), r"rope\.factor is required for rope_type=.yarn."),
])
def test_invalid_fields_are_named(overrides, match):
  with pytest.raises(ValueError, match=match):
    preset("tiny", **overrides)


def test_unknown_fields_are_rejected():
  with pytest.raises(ValueError, match=r"unknown field\(s\) \['hidden_size'\]"):
    ModelConfig.from_dict({"hidden_size": 3})
  with pytest.raises(ValueError, match="model preset 'llama_8b' is unknown"):
    preset("llama_8b")


def test_hf_configs_with_unsupported_features_are_refused():
  hf = preset("tiny").to_hf()
  with pytest.raises(ValueError, match="attention_bias"):
    ModelConfig.from_hf(dict(hf, attention_bias=True))
  with pytest.raises(ValueError, match="hidden_act='gelu'"):
    ModelConfig.from_hf(dict(hf, hidden_act="gelu"))


def test_derived_sizes_follow_a_replaced_width():
  """head_dim (= d_model / n_heads) and MHA's n_kv_heads are re-derived when the sizes they come
  from change, and kept when they were given explicitly."""
  tiny = preset("tiny")  # d_model 64, 4 heads (2 kv): head_dim 16, derived
  assert tiny.replace(d_model=128).head_dim == 32
  assert tiny.replace(n_heads=8, n_kv_heads=2).head_dim == 8
  assert tiny.replace(d_model=128, head_dim=16).head_dim == 16
  wide = preset("tiny_wide_heads")  # head_dim 16 given explicitly (d_model 48 / 4 heads = 12)
  assert wide.replace(d_model=96).head_dim == 16
  mha = preset("llama_7b")
  assert mha.replace(n_heads=16).n_kv_heads == 16 and tiny.replace(n_heads=8).n_kv_heads == 2
