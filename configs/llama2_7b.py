"""Llama 2 7B pretraining (Touvron et al. 2023b, "Llama 2", §2.2 and Table 1).

Reproduces: the 7B row of Table 1 — the LLaMA architecture with a 4096-token context and RMSNorm
  eps 1e-5, lr 3.0e-4, 2.0T tokens in 4M-token batches (476,838 steps of 1024 x 4096) — with the
  §2.2 optimizer: AdamW b=(0.9, 0.95), eps 1e-5, weight decay 0.1, clipping 1.0, 2000 warmup
  steps, cosine decay to 10% of the peak. Data: TFDS `c4/en` in place of the paper's non-public
  mixture, so only the trend of its Figure 5 training-loss curve carries over.
Command:
  python -m llama_jax.train --config=configs/llama2_7b.py --workdir=runs/llama2_7b
Hardware: 256 accelerators with >= 40 GB each (TPU v5p 256 chips, or 32 nodes of 8 H100), pure
  FSDP: 4 sequences of 4096 and ~0.4 GB of parameters + Adam state per device, bf16, full remat.
Expected: the 7B curve of Figure 5 in trend; ~21 days on 256 v5p chips at 40% MFU (8.6e22
  model FLOPs). The paper's run took 184,320 A100-80GB GPU-hours (its Table 2).
"""
from llama_jax.training import defaults as base

DEVICES = 256


def get_config():
  return base.llama_pretraining("llama2_7b", peak_lr=3e-4, tokens=2.0e12, seq_len=4096,
                                adam_eps=1e-5)
