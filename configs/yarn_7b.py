"""YaRN s=16: Llama 2 7B extended from 4k to 64k context (Peng et al. 2023, "YaRN", §4.1).

Reproduces: the "YaRN 7B s=16, 64k" model of Tables 2-5: rope_type yarn, factor 16, original
  context 4096, max_position_embeddings 65536; 400 steps of 64 sequences x 65536 tokens of PG19
  (1.68B tokens); AdamW b=(0.9, 0.95), lr 2e-5, no weight decay, 20 warmup steps then linear
  decay (App. B.4; /work/shared/reference/rope_methods.md §5.5), bf16, full remat.
Before: convert the Meta/HF Llama 2 7B weights (the recipe's `init_from` and `data.tokenizer`
  defaults; override them if yours live elsewhere) and prepare TFDS `pg19`:
  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-7b-hf --dst=ckpt/llama2_7b
Command:
  python -m llama_jax.train --config=configs/yarn_7b.py --workdir=runs/yarn_7b
Hardware: 8 GPUs with 80 GB (A100/H100; the paper's setup), FSDP over the 8, one 64k sequence
  per device per micro-batch (8 micro-batches per step); or any multiple of 8 devices.
Expected: Proof-pile perplexity (Table 2, sliding window) 3.51 at 8k, 2.65 at 32k, 2.42 at 64k;
  passkey retrieval to 64k at 96.3% (Table 5). Time ~13 h on 8 H100 at 40% MFU (1.5e20 model
  FLOPs; full remat adds ~1/3).
"""
from llama_jax.training import defaults as base

DEVICES = 8


def get_config():
  return base.yarn_extension("llama2_7b", factor=16, steps=400, init_from="ckpt/llama2_7b",
                             tokenizer="Llama-2-7b-hf/tokenizer.model")
