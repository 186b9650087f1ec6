"""LLaMA-13B pretraining (Touvron et al. 2023, "LLaMA", Table 2 and §2.2).

Reproduces: the 13.0B row of Table 2 — d_model 5120, 40 layers, 40 heads, lr 3.0e-4, batch 4M
  tokens, 1.0T tokens (238,419 steps of 2048 x 2048) — with the §2.2 optimizer: AdamW
  b=(0.9, 0.95), weight decay 0.1, clipping 1.0, 2000 warmup steps, cosine to 10% of the peak.
  Data: TFDS `c4/en` in place of the paper's non-public mixture (see llama_7b.py).
Command:
  python -m llama_jax.train --config=configs/llama_13b.py --workdir=runs/llama_13b
Hardware: 256 accelerators with >= 40 GB each (TPU v5p 256 chips, or 32 nodes of 8 H100), pure
  FSDP: 8 sequences and ~0.8 GB of parameters + Adam state per device, bf16, full remat.
Expected: the 13B curve of Figure 1 in trend; ~20 days on 256 v5p chips at 40% MFU (8.0e22 model
  FLOPs). The paper's run took 135,168 A100-80GB GPU-hours (Table 15).
"""
from llama_jax.training import defaults as base

DEVICES = 256


def get_config():
  return base.llama_pretraining("llama_13b", peak_lr=3e-4, tokens=1.0e12, seq_len=2048)
