r"""The adapters miniature's fine-tunes: full fine-tuning, LoRA, Series, Parallel and Prefix.

Reproduces: LLM-Adapters' comparison (Hu et al. 2023, Table 1: accuracy of LLaMA-7B on math word
  problems after fine-tuning on math_10k with each method; trainable parameter share; their
  §4 hyperparameters) in miniature: the base of `pretrain.py`, 4,000 generated word problems in
  math_10k's shape (`make_data.py`), every method for the same 750 steps of 16 examples (3
  epochs, the paper's) on the same data order, then greedy decoding on two generated test sets
  whose numbers training never saw. The recipe of llama_jax/training/llm_adapters.py, scaled down:
  - data: LLM-Adapters' training template, cutoff 128 tokens (the longest example has 110),
    BOS + EOS, loss on every token (train_on_inputs, their default), one example per row;
  - optimizer: AdamW b=(0.9, 0.999), eps 1e-8, no weight decay, warmup 5% of the steps (37;
    theirs 100 of ~1,900) then linear decay to 0, clipping 1.0, batch 16;
  - adapters scaled to d_model 128 (theirs: 4096): LoRA r=4, alpha 8 (their alpha/r = 2),
    dropout 0.05 on q, k, v, up, down; Series bottleneck 16 after `down`; Parallel bottleneck 16
    beside `up` and `down` (both d/8; theirs d/16, which would be 8 here); Prefix 10 virtual
    tokens (theirs);
  - peak lr per family (`LR`): theirs is 3e-4 for LoRA/Series/Parallel and 3e-2 for Prefix on a
    7B base. A 1M-parameter model with rank-4 / width-16 adapters moves slower per step, so the
    adapters take the top of the usual adapter range (3e-3); prefix keeps its 100x-higher
    family rate (3e-2, theirs); full fine-tuning takes 1e-3 (a third of the pretraining peak:
    every weight moves, and a higher rate would erase what pretraining taught).
Command (run.py runs all five after the pretraining; one by hand):
  python -m llama_jax.train \
      --config=experiments/adapters/finetune.py:method=lora \
      --workdir=runs/adapters_miniature/lora
  `method` is full | lora | series | parallel | prefix; `work=DIR` and `scale=smoke` as in
  pretrain.py.
Hardware: a 2-core CPU (one device).
Expected (measured 2026-12-02, quiet 2-core VM): mean accuracy on the two test sets: full
  fine-tuning 67.5%, LoRA 37.5%, parallel 6.8%, prefix 3.0%, series 2.5% (the base 11.5%);
  table and reasons: experiments/adapters/README.md. Time: 126-189 s per method.
"""
import importlib.util
import os

from llama_jax.core.errors import ConfigError
from llama_jax.data import instructions
from llama_jax.training import defaults as base

DEVICES = 1
METHODS = ("full", "lora", "series", "parallel", "prefix")
LR = {"full": 1e-3, "lora": 3e-3, "series": 3e-3, "parallel": 3e-3, "prefix": 3e-2}
ADAPTERS = {  # config.adapter.<name> fields per method; "full" has none
    "lora": dict(rank=4, alpha=8.0, dropout=0.05, targets=("q", "k", "v", "up", "down"),
                 rslora=False, dora=False),
    "series": dict(bottleneck_size=16, non_linearity="tanh", scaling=1.0, targets=("down",),
                   init="bert"),
    "parallel": dict(bottleneck_size=16, non_linearity="tanh", scaling=1.0,
                     targets=("up", "down"), init="bert"),
    "prefix": dict(num_virtual_tokens=10),
}
STEPS, BATCH, CUTOFF = 750, 16, 128  # 3 epochs of the 4,000 problems, as the paper trains
SAMPLE_QUESTION = "Tom has 13 apples. He buys 5 more apples. How many apples does Tom have now?"


def _pretrain():
  """pretrain.py beside this file (recipes are loaded by path, not as a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pretrain.py")
  spec = importlib.util.spec_from_file_location("_adapters_miniature_pretrain", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config(arg=None):
  pretrain = _pretrain()
  given = base.recipe_options(arg, method=str, work=str, scale=str)
  method = given.pop("method", "lora")
  if method not in METHODS:
    raise ConfigError(f"recipe argument method={method!r}; allowed: {list(METHODS)}")
  o = pretrain.options(",".join(f"{k}={v}" for k, v in given.items()))
  data = os.path.join(o["work"], "data")
  c = base.get_config()
  c.model = pretrain.model()
  c.init_from = os.path.join(o["work"], "pretrain")
  c.seq_len = CUTOFF
  c.batch_size = BATCH
  c.steps = STEPS
  c.optim.update(dict(peak_lr=LR[method], warmup_steps=STEPS // 20, schedule="linear",
                      final_lr_fraction=0.0, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0,
                      clip_norm=1.0))
  c.data.update(dict(format="instructions", tokenizer=os.path.join(data, "tokenizer.model"),
                     cache_dir=os.path.join(o["work"], "cache"), pack=False, add_bos=True,
                     add_eos=True, shuffle=True))
  c.data.instructions.update(dict(train_file=os.path.join(data, "train.json"), eval_file="",
                                  heldout_examples=0, cutoff_len=CUTOFF, train_on_inputs=True))
  c.eval_every = 0  # accuracy on the test sets is measured after training (run.py)
  c.checkpoint_every = STEPS
  c.log_every = 1  # every step's time lands in metrics.jsonl (run.py takes the median)
  c.sample_prompt = instructions.eval_prompt(SAMPLE_QUESTION)
  c.sample_tokens = 32
  if method != "full":
    c.adapter.name = method
    c.adapter[method].update(ADAPTERS[method])
  if o["scale"] == "smoke":
    c.steps, c.batch_size, c.optim.warmup_steps, c.checkpoint_every = 3, 2, 1, 3
    c.sample_tokens = 0  # no sample: its decoding would be compiled for nothing
  return c
