"""LLM-Adapters recipes: the paper's / their scripts' hyperparameters in every recipe, the
epochs-to-steps count, and the adapter settings each recipe selects.

Every recipe is also validated on its own hardware by tests/training/test_validation.py.
"""
import json
import math

import pytest

from llama_jax.training import llm_adapters, recipes

# Their math_running_commands (reference §1.5): method -> (batch, epochs, lr, math val set).
PAPER = {"lora": (16, 3, 3e-4, 0), "series": (16, 3, 3e-4, 120), "parallel": (16, 3, 3e-4, 0),
         "prefix": (8, 5, 3e-2, 120)}
RECIPES = [(m, s, t) for m in PAPER for s in ("7b", "13b") for t in ("math", "commonsense")]


@pytest.mark.parametrize("method,size,task", RECIPES)
def test_recipe_follows_their_scripts(method, size, task):
  c = recipes.load(f"{method}_llama_{size}_{task}")
  assert c.adapter.name == method
  assert {k: c.adapter[method][k] for k in llm_adapters.ADAPTERS[method][method]} == \
      llm_adapters.ADAPTERS[method][method]
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


def test_a_recipe_trains_only_its_adapter():
  """The recipe's model spec freezes the base: LoRA r=32 on q, k, v, up, down of LLaMA-7B is
  r * (in + out) per projection and layer (the paper's 0.83% of the parameters)."""
  from llama_jax.training import validation
  c = recipes.load("lora_llama_7b_math")
  spec = validation.validate(c, check_paths=False).spec
  d, ffn, layers, r = 4096, 11008, 32, 32
  want = layers * r * (3 * (d + d) + (d + ffn) + (ffn + d))
  assert spec.num_params(trainable_only=True) == want
  assert abs(want / (spec.num_params() - want) - 0.0083) < 0.0005


def test_steps_count_the_training_file(tmp_path):
  path = tmp_path / "math.json"
  path.write_text(json.dumps([{"instruction": "q", "input": "", "output": "a"}] * 1000))
  c = llm_adapters.recipe("7b", "series", "math", train_file=str(path))
  assert c.steps == math.ceil(3 * (1000 - 120) / 16)
  with pytest.raises(ValueError, match="allowed sizes"):
    llm_adapters.recipe("70b", "lora", "math")
