"""YaRN s=32: the s=16 Llama 2 7B run continued to a 128k context (Peng et al. 2023, §4.1).

Reproduces: "YaRN 7B s=32, 128k" of Tables 2-5: starts from the s=16 run (configs/yarn_7b.py)
  and trains 200 more steps with seed 31337 on the same 64k PG19 data — "train short, test
  long" — with rope factor 32 and max_position_embeddings 131072; otherwise as yarn_7b.py.
  `init_from` is the s=16 run's workdir: its latest checkpoint's parameters are loaded, the
  optimizer starts fresh (20 warmup steps, linear decay over the 200).
Command (after configs/yarn_7b.py finished in runs/yarn_7b):
  python -m llama_jax.train --config=configs/yarn_7b_128k.py --workdir=runs/yarn_7b_128k
Hardware: 8 GPUs with 80 GB (A100/H100), FSDP, as yarn_7b.py.
Expected: Proof-pile perplexity 3.56 / 2.70 / 2.45 / 2.36 / 2.37 at 8k / 32k / 64k / 96k / 128k
  (Table 2); passkey to 128k at 99.4% (Table 5). Time ~7 h on 8 H100 at 40% MFU.
"""
from llama_jax.training import defaults as base

DEVICES = 8


def get_config():
  return base.yarn_extension("llama2_7b", factor=32, steps=200, init_from="runs/yarn_7b",
                             tokenizer="Llama-2-7b-hf/tokenizer.model", seed=31337)
