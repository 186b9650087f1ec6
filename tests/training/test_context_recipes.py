"""The E²-LLM and PoSE recipes follow their papers; the recipe argument (`--config=x.py:g_max=10`)
and `get_hyper` grid reach the config. (`test_validation` checks every recipe against its
hardware.)"""
import importlib

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from llama_jax.core.errors import ConfigError
from llama_jax.model.config import ModelConfig
from llama_jax.training import defaults as base
from llama_jax.training import validation as config_lib


def model(c) -> ModelConfig:
  return ModelConfig.from_dict(c.model.to_dict())


@pytest.mark.parametrize("name,preset", [("e2llm_7b", "llama2_7b"), ("e2llm_13b", "llama2_13b")])
def test_e2llm_recipes_follow_the_paper(name, preset):
  c = importlib.import_module(f"configs.{name}").get_config()
  m = model(c)
  want = ModelConfig.from_dict(ml_collections.ConfigDict(base.model_fields(preset)).to_dict())
  for f in ("vocab_size", "d_model", "n_layers", "n_heads", "ffn_dim", "norm_eps"):
    assert getattr(m, f) == getattr(want, f)
  assert m.rope.rope_type == "default" and m.max_position_embeddings == 4096  # Llama 2's L
  assert (c.steps, c.batch_size, c.seq_len) == (30000, 16, 4096)
  o = c.optim
  assert (o.peak_lr, o.b1, o.b2, o.trainable) == (1e-5, 0.9, 0.95, ".*")  # full fine-tuning
  a = c.augment
  assert a.name == "e2llm"
  assert dict(a.e2llm) == {"g_max": 20, "window": 4096, "n_sink": 4, "per": "step"}
  assert c.init_from == f"ckpt/{preset}" and c.data.tokenizer
  assert c.evals.passkey.e2llm_window == 4096


def test_e2llm_recipe_argument_and_grid():
  module = importlib.import_module("configs.e2llm_13b")
  assert module.get_config("g_max=10").augment.e2llm.g_max == 10
  assert module.get_config("g_max=5,seed=3").seed == 3
  with pytest.raises(ConfigError, match=r"recipe argument 'gmax=10'; allowed: g_max=<int>, "
                     r"seed=<int>"):
    module.get_config("gmax=10")
  with pytest.raises(ConfigError, match=r"recipe argument g_max='ten' is not a int"):
    module.get_config("g_max=ten")
  grid = module.get_hyper()
  assert [h["augment.e2llm.g_max"] for h in grid] == [5, 10, 20, 30]  # Table 5
  for overrides in grid:
    c = module.get_config()
    for key, value in overrides.items():
      *path, leaf = key.split(".")
      node = c
      for part in path:
        node = node[part]
      node[leaf] = value
    config_lib.validate(config_lib.lock(c), n_devices=module.DEVICES, check_paths=False)
    assert c.augment.e2llm.g_max == overrides["augment.e2llm.g_max"]


def test_config_flags_pass_the_recipe_argument():
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "recipe", flag_values=fv, lock_config=True)
  fv(["train", "--config=configs/e2llm_7b.py:g_max=30"])
  assert fv.config.augment.e2llm.g_max == 30


def test_pose_recipe_follows_the_paper():
  c = importlib.import_module("configs.pose_7b_16k").get_config()
  m = model(c)
  assert (m.d_model, m.n_layers, m.n_heads) == (4096, 32, 32)  # LLaMA-7B
  assert (m.rope.rope_type, m.rope.factor, m.max_position_embeddings) == ("linear", 8.0, 16384)
  assert (c.steps, c.batch_size, c.seq_len) == (1000, 64, 2048)
  o = c.optim
  assert (o.peak_lr, o.warmup_steps, o.schedule, o.final_lr_fraction) == (2e-5, 10, "linear",
                                                                          0.0)
  assert (o.b1, o.b2, o.weight_decay, o.clip_norm) == (0.9, 0.999, 0.0, 1.0)
  assert (c.augment.name, c.augment.pose.target_length) == ("pose", 16384)
  assert c.data.pack is False
