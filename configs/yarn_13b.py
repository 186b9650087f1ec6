"""YaRN s=16: Llama 2 13B extended from 4k to 64k context (Peng et al. 2023, "YaRN", §4.1).

Reproduces: the "YaRN 13B s=16, 64k" model of Tables 2-5: rope_type yarn, factor 16, original
  context 4096, max_position_embeddings 65536; 400 steps of 64 sequences x 65536 tokens of PG19;
  AdamW b=(0.9, 0.95), lr 2e-5, no weight decay, 20 warmup steps then linear decay, bf16, full
  remat (see yarn_7b.py and rope_methods.md §5.5).
Before: python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-13b-hf \
          --dst=ckpt/llama2_13b   (and prepare TFDS `pg19`)
Command:
  python -m llama_jax.train --config=configs/yarn_13b.py --workdir=runs/yarn_13b
Hardware: FSDP over 8 devices puts ~26 GB of parameters + Adam state on each, and
  `python -m llama_jax.plan --config=configs/yarn_13b.py --hbm_gib=80` estimates a 118 GiB peak
  per device with one 64k sequence per micro-batch: 8 x H200 (141 GB), or split sequences on
  80 GB parts, e.g. 64 devices with --config.mesh.fsdp=32 --config.mesh.sequence=2
  --config.grad_accum=2 (planned peak 56 GiB). The plan is a CPU-compiled estimate.
Expected: Proof-pile perplexity 3.25 at 8k, 2.50 at 32k, 2.29 at 64k (Table 2); passkey to 64k
  at 97.5% (Table 5). Time ~23 h on 8 H100 at 40% MFU (2.6e20 model FLOPs).
"""
from llama_jax.training import defaults as base

DEVICES = 8


def get_config():
  return base.yarn_extension("llama2_13b", factor=16, steps=400, init_from="ckpt/llama2_13b",
                             tokenizer="Llama-2-13b-hf/tokenizer.model")
