"""The LLM-Adapters recipe family (Hu et al., EMNLP 2023, arXiv 2304.01933).

`recipe(size, method, task)` builds the fine-tuning of LLaMA-1 7B/13B with one adapter method
(lora, series, parallel, prefix) on math_10k or commonsense_170k, with the hyperparameters of
their `math_running_commands` and `finetune.py` (/work/shared/reference/llama_peft_formats.md
§1.2, §1.5, §1.9):

- data: the instruction file in LLM-Adapters' templates, cutoff 256 tokens, BOS + conditional
  EOS, loss on every token (train_on_inputs, their default), one example per row (their padded
  batches), `heldout_examples` = their val_set_size, split with seed 42;
- optimizer: AdamW b=(0.9, 0.999), eps 1e-8, no weight decay, 100 warmup steps then linear decay
  to 0, clipping 1.0 (HF Trainer defaults); lr, batch and epochs per method (`TRAINING`);
  steps = ceil(epochs x training examples / batch), the examples counted from the recipe's
  training file when it exists where the recipe is loaded, else its nominal size;
- model: the converted LLaMA-1 checkpoint (`init_from`), bf16 weights and compute (theirs: fp16
  weights, adapters in fp32), full remat for 13B (their --use_gradient_checkpointing);
- adapters: one dict per method (`ADAPTERS`), written into `config.adapter.name` and
  `config.adapter.<name>.<field>` (`llama_jax.adapters`); only the adapter trains and is
  checkpointed, the base comes from `init_from`.

Placement notes (§1.3, §1.5): Series is the bottleneck after the MLP (on `down`, an output
adapter: the placement the paper found best and the parameter counts of its tables support; the
published LLaMA-7B command targets gate/up, which looks stale); Parallel is on `up` and `down`;
LoRA on q, k, v, up, down with r=32, alpha=64. Commonsense: the repository ships no command;
LoRA follows the DoRA repository's reproduction (batch 16, 3 epochs, lr 3e-4, val 120,
evaluation every 80 steps), the other methods keep their math settings with that validation.
"""
from __future__ import annotations

import math
import os

import ml_collections

from llama_jax.data import instructions
from llama_jax.training import defaults as base

METHODS = ("lora", "series", "parallel", "prefix")
SIZES = {"7b": "llama_7b", "13b": "llama_13b"}

# config.adapter.<name>.<field> per method (the adapters package's fields).
ADAPTERS = {
    "lora": {"name": "lora", "lora": dict(
        rank=32, alpha=64.0, dropout=0.05, targets=("q", "k", "v", "up", "down"),
        rslora=False, dora=False)},
    "series": {"name": "series", "series": dict(
        bottleneck_size=256, non_linearity="tanh", scaling=1.0, targets=("down",),
        init="bert")},
    "parallel": {"name": "parallel", "parallel": dict(
        bottleneck_size=256, non_linearity="tanh", scaling=1.0, targets=("up", "down"),
        init="bert")},
    "prefix": {"name": "prefix", "prefix": dict(num_virtual_tokens=10)},
}

# Per method: global batch, micro-batch, epochs, peak lr, held-out examples on math, steps
# between evaluations/checkpoints of the 7B math run (math_running_commands; finetune.py
# defaults 200 where the command gives none).
TRAINING = {
    "lora": dict(batch=16, micro=4, epochs=3, lr=3e-4, math_val=0, every=200),
    "series": dict(batch=16, micro=4, epochs=3, lr=3e-4, math_val=120, every=200),
    "parallel": dict(batch=16, micro=4, epochs=3, lr=3e-4, math_val=0, every=200),
    "prefix": dict(batch=8, micro=4, epochs=5, lr=3e-2, math_val=120, every=10),
}
TASKS = {
    "math": dict(file="LLM-Adapters/ft-training_set/math_10k.json", nominal=10_000),
    "commonsense": dict(file="LLM-Adapters/ft-training_set/commonsense_170k.json",
                        nominal=170_000),
}
COMMONSENSE_VAL, COMMONSENSE_EVERY, LARGE_EVERY = 120, 80, 80
CUTOFF = 256
SAMPLE_QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as "
                   "many clips in May. How many clips did Natalia sell altogether in April and "
                   "May?")


def training_examples(path: str, nominal: int, heldout: int) -> int:
  """Examples left for training: counted in `path` when it exists here, else `nominal`."""
  n = instructions.count_examples(path) if os.path.isfile(os.path.expanduser(path)) else nominal
  return n - heldout


def apply_adapter(c: ml_collections.ConfigDict, method: str) -> None:
  """Selects ADAPTERS[method] in `c.adapter` (name and fields)."""
  settings = ADAPTERS[method]
  c.adapter.name = settings["name"]
  c.adapter[settings["name"]].update(settings[settings["name"]])


def recipe(size: str, method: str, task: str, init_from: str = "", tokenizer: str = "",
           train_file: str = "") -> ml_collections.ConfigDict:
  """The LLM-Adapters fine-tuning of LLaMA-`size` with `method` on `task` (module docstring)."""
  if size not in SIZES or method not in METHODS or task not in TASKS:
    raise ValueError(f"recipe({size!r}, {method!r}, {task!r}); allowed sizes {list(SIZES)}, "
                     f"methods {list(METHODS)}, tasks {list(TASKS)}")
  t, data = TRAINING[method], TASKS[task]
  val = t["math_val"] if task == "math" else COMMONSENSE_VAL
  every = t["every"] if task == "math" else COMMONSENSE_EVERY
  if size == "13b":  # their 13B runs: evaluation and checkpoints every 80 steps
    every = LARGE_EVERY
  train_file = train_file or data["file"]

  c = base.get_config()
  c.model = base.model_fields(SIZES[size], dtype="bfloat16", param_dtype="bfloat16",
                              attention="auto", remat="full" if size == "13b" else "none")
  c.init_from = init_from or f"ckpt/llama_{size}"
  c.seq_len = CUTOFF
  c.batch_size = t["batch"]
  c.grad_accum = t["batch"] // t["micro"]
  c.steps = math.ceil(t["epochs"] * training_examples(train_file, data["nominal"], val)
                      / t["batch"])
  c.optim.update(dict(peak_lr=t["lr"], warmup_steps=100, schedule="linear",
                      final_lr_fraction=0.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                      clip_norm=1.0))
  c.data.update(dict(format="instructions", tokenizer=tokenizer or f"llama-{size}-hf/"
                     "tokenizer.model", pack=False, add_bos=True, add_eos=True, shuffle=True))
  c.data.instructions.update(dict(train_file=train_file, eval_file="", heldout_examples=val,
                                  split_seed=42, cutoff_len=CUTOFF, train_on_inputs=True))
  c.eval_every = every if val else 0
  c.eval_batches = math.ceil(val / t["micro"]) if val else 1  # every held-out example
  c.checkpoint_every = every
  c.log_every = 10
  c.sample_prompt = instructions.eval_prompt(SAMPLE_QUESTION)
  c.sample_tokens = 128
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, sequence=1))
  apply_adapter(c, method)
  return c
