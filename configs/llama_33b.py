"""LLaMA-33B pretraining (Touvron et al. 2023, "LLaMA", Table 2 and §2.2).

Reproduces: the 32.5B row of Table 2 — d_model 6656, 60 layers, 52 heads, lr 1.5e-4, batch 4M
  tokens, 1.4T tokens (333,787 steps of 2048 x 2048) — with the §2.2 optimizer: AdamW
  b=(0.9, 0.95), weight decay 0.1, clipping 1.0, 2000 warmup steps, cosine to 10% of the peak.
  Data: TFDS `c4/en` in place of the paper's non-public mixture (see llama_7b.py).
Command:
  python -m llama_jax.train --config=configs/llama_33b.py --workdir=runs/llama_33b
Hardware: 512 accelerators with >= 40 GB each (TPU v5p 512 chips, or 64 nodes of 8 H100), pure
  FSDP: 4 sequences and ~1 GB of parameters + Adam state per device, bf16, full remat.
Expected: the 33B curve of Figure 1 in trend; ~34 days on 512 v5p chips at 40% MFU (2.8e23 model
  FLOPs). The paper's run took 530,432 A100-80GB GPU-hours (Table 15).
"""
from llama_jax.training import defaults as base

DEVICES = 512


def get_config():
  return base.llama_pretraining("llama_33b", peak_lr=1.5e-4, tokens=1.4e12, seq_len=2048)
