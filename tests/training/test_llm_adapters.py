"""LLM-Adapters recipes: the paper's / their scripts' hyperparameters in every recipe, the
epochs-to-steps count, and the adapter settings (applied where config.adapter exists).

Every recipe is also validated on its own hardware by tests/training/test_validation.py.
"""
import json
import math

import ml_collections
import pytest

from llama_jax.training import llm_adapters, recipes

# Their math_running_commands (reference §1.5): method -> (batch, epochs, lr, math val set).
PAPER = {"lora": (16, 3, 3e-4, 0), "series": (16, 3, 3e-4, 120), "parallel": (16, 3, 3e-4, 0),
         "prefix": (8, 5, 3e-2, 120)}
RECIPES = [(m, s, t) for m in PAPER for s in ("7b", "13b") for t in ("math", "commonsense")]


@pytest.mark.parametrize("method,size,task", RECIPES)
def test_recipe_follows_their_scripts(method, size, task):
  with pytest.warns(UserWarning, match="config.adapter is not defined"):
    c = recipes.load(f"{method}_llama_{size}_{task}")
  batch, epochs, lr, math_val = PAPER[method]
  val = math_val if task == "math" else 120
  nominal = 10_000 if task == "math" else 170_000
  assert c.batch_size == batch and c.batch_size // c.grad_accum == 4  # micro-batch 4
  assert c.steps == math.ceil(epochs * (nominal - val) / batch)
  o = c.optim
  assert (o.peak_lr, o.warmup_steps, o.schedule, o.final_lr_fraction) == (lr, 100, "linear", 0.0)
  assert (o.b1, o.b2, o.eps, o.weight_decay, o.clip_norm) == (0.9, 0.999, 1e-8, 0.0, 1.0)
  d = c.data
  assert (d.format, d.pack, d.add_bos, d.add_eos, c.seq_len) == ("instructions", False, True,
                                                                  True, 256)
  ins = d.instructions
  assert (ins.cutoff_len, ins.train_on_inputs, ins.heldout_examples, ins.split_seed) == (
      256, True, val, 42)
  assert ins.train_file.endswith("math_10k.json" if task == "math" else "commonsense_170k.json")
  every = 80 if size == "13b" or task == "commonsense" else (10 if method == "prefix" else 200)
  assert c.checkpoint_every == every and c.eval_every == (every if val else 0)
  assert c.eval_batches * 4 >= val  # every held-out example is evaluated
  assert c.model.remat == ("full" if size == "13b" else "none")
  assert (c.model.d_model, c.model.n_layers) == ((4096, 32) if size == "7b" else (5120, 40))
  assert c.model.norm_eps == 1e-6 and c.model.max_position_embeddings == 2048  # LLaMA-1
  assert c.init_from == f"ckpt/llama_{size}"


def test_adapter_settings_follow_the_paper():
  a = llm_adapters.ADAPTERS
  assert a["lora"]["lora"] == dict(rank=32, alpha=64.0, dropout=0.05,
                                   targets=("q", "k", "v", "up", "down"), rslora=False,
                                   dora=False)
  assert a["series"]["series"] == dict(bottleneck_size=256, non_linearity="tanh", scaling=1.0,
                                       targets=("down",), init="bert")
  assert a["parallel"]["parallel"] == dict(bottleneck_size=256, non_linearity="tanh",
                                           scaling=1.0, targets=("up", "down"), init="bert")
  assert a["prefix"]["prefix"] == dict(num_virtual_tokens=10)


def test_adapter_settings_are_written_where_config_adapter_exists():
  """Once the defaults define config.adapter, a recipe selects its method and fields."""
  c = ml_collections.ConfigDict({"adapter": {
      "name": "", "lora": dict(rank=8, alpha=16.0, dropout=0.0, targets=("q", "v"),
                               rslora=False, dora=False)}})
  assert llm_adapters.apply_adapter(c, "lora")
  assert c.adapter.name == "lora" and c.adapter.lora.rank == 32
  assert c.adapter.lora.targets == ("q", "k", "v", "up", "down")
  with pytest.warns(UserWarning, match="would fine-tune every weight"):
    assert not llm_adapters.apply_adapter(ml_collections.ConfigDict(), "prefix")


def test_steps_count_the_training_file(tmp_path):
  path = tmp_path / "math.json"
  path.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}] * 1000))
  with pytest.warns(UserWarning):
    c = llm_adapters.recipe("7b", "series", "math", train_file=str(path))
  assert c.steps == math.ceil(3 * (1000 - 120) / 16)
  with pytest.raises(ValueError, match="allowed sizes"):
    llm_adapters.recipe("70b", "lora", "math")
