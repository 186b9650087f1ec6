"""LLaMA-65B pretraining (Touvron et al. 2023, "LLaMA", Table 2 and §2.2).

Reproduces: the 65.2B row of Table 2 — d_model 8192, 80 layers, 64 heads, lr 1.5e-4, batch 4M
  tokens, 1.4T tokens (333,787 steps of 2048 x 2048) — with the §2.2 optimizer: AdamW
  b=(0.9, 0.95), weight decay 0.1, clipping 1.0, 2000 warmup steps, cosine to 10% of the peak.
  Data: TFDS `c4/en` in place of the paper's non-public mixture (see llama_7b.py).
Command:
  python -m llama_jax.train --config=configs/llama_65b.py --workdir=runs/llama_65b
Hardware: 1024 accelerators with >= 40 GB each (TPU v5p 1024 chips, or 128 nodes of 8 H100):
  FSDP over 256 devices within 4 data-parallel replicas (mesh data=4 x fsdp=256), so the
  parameter all-gathers stay inside a replica: ~4 GB of parameters + Adam state and 2 sequences
  per device, bf16, full remat. The state is created sharded; no host ever holds the model.
Expected: the 65B curve of Figure 1 in trend; ~34 days on 1024 v5p chips at 40% MFU (5.6e23
  model FLOPs). The paper: ~380 tokens/s/GPU on 2048 A100-80GB, about 21 days for 1.4T tokens;
  1,022,362 GPU-hours (Table 15).
"""
from llama_jax.training import defaults as base

DEVICES = 1024


def get_config():
  c = base.llama_pretraining("llama_65b", peak_lr=1.5e-4, tokens=1.4e12, seq_len=2048)
  c.mesh.update(dict(data=-1, fsdp=256))
  return c
