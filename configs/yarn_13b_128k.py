"""YaRN s=32: the s=16 Llama 2 13B run continued to a 128k context (Peng et al. 2023, §4.1).

Reproduces: "YaRN 13B s=32, 128k" of Tables 2-5: 200 more steps from the s=16 run
  (configs/yarn_13b.py) with seed 31337 on the same 64k PG19 data, rope factor 32,
  max_position_embeddings 131072; `init_from` is the s=16 run's workdir (its latest parameters,
  a fresh optimizer); otherwise as yarn_13b.py.
Command (after configs/yarn_13b.py finished in runs/yarn_13b):
  python -m llama_jax.train --config=configs/yarn_13b_128k.py --workdir=runs/yarn_13b_128k
Hardware: 8 GPUs with 80 GB (A100/H100), FSDP, as yarn_13b.py.
Expected: Proof-pile perplexity 3.29 / 2.53 / 2.31 / 2.23 / 2.24 at 8k / 32k / 64k / 96k / 128k
  (Table 2); passkey to 128k at 99.4% (Table 5). Time ~12 h on 8 H100 at 40% MFU.
"""
from llama_jax.training import defaults as base

DEVICES = 8


def get_config():
  return base.yarn_extension("llama2_13b", factor=32, steps=200, init_from="runs/yarn_13b",
                             tokenizer="Llama-2-13b-hf/tokenizer.model", seed=31337)
