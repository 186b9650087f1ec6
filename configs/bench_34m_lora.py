"""The benchmark model with LoRA: configs/bench_34m.py's 34M LLaMA, base frozen, LLM-Adapters'
LoRA setting (r 32, alpha 64, dropout 0.05 on q, k, v, up, down), 8 x 512 tokens per step.

Compares the llama_jax adapter train step with HF peft (`get_peft_model`, same options) +
torch AdamW over the adapter parameters, on the same machine, steps interleaved.

Command:   python -m llama_jax.bench --config=configs/bench_34m_lora.py --out=/tmp/bench_lora \
               --impls=xla_blocked,hf_torch
Hardware:  sized for a 2-core CPU; runs unchanged on a GPU/TPU.
Expected:  see the README's benchmark section (LoRA rows) for the measured ratio to HF peft.
"""
from llama_jax.training import recipes

DEVICES = 1


def get_config():
  c = recipes.load("bench_34m")  # by name: works from a checkout and from an installed package
  c.adapter.name = "lora"
  c.adapter.lora.update(dict(rank=32, alpha=64.0, dropout=0.05,
                             targets=("q", "k", "v", "up", "down")))
  c.optim.weight_decay = 0.0  # LLM-Adapters' HF Trainer default
  return c
