"""LLaMA-7B pretraining (Touvron et al. 2023, "LLaMA", Table 2 and §2.2).

Reproduces: the 6.7B row of Table 2 — d_model 4096, 32 layers, 32 heads, lr 3.0e-4, batch 4M
  tokens, 1.0T tokens (238,419 steps of 2048 x 2048) — with the §2.2 optimizer: AdamW
  b=(0.9, 0.95), weight decay 0.1, gradient clipping 1.0, 2000 warmup steps, cosine decay to 10%
  of the peak. Data: TFDS `c4/en` (prepare it first, see the TFDS C4 page); the paper's mixture
  (67% CommonCrawl, 15% C4, GitHub, Wikipedia, books, ...) is not public, so only the trend of
  its Figure 1 training-loss curve carries over, not its values.
Command:
  python -m llama_jax.train --config=configs/llama_7b.py --workdir=runs/llama_7b
  (multi-host: configs/launch/tpu_pod.sh or configs/launch/slurm_gpu.sbatch)
Hardware: 256 accelerators with >= 32 GB each (e.g. a TPU v5p slice of 256 chips, or 32 nodes of
  8 H100), pure FSDP (mesh.fsdp=-1): 8 sequences and ~0.4 GB of parameters + Adam state per
  device, bf16 compute, full remat.
Expected: training loss falling like the 7B curve of Figure 1; ~10 days on 256 v5p chips at 40%
  MFU (4.1e22 model FLOPs; full remat adds ~1/3 more compute). The paper's run took 82,432
  A100-80GB GPU-hours (its Table 15).
"""
from llama_jax.training import defaults as base

DEVICES = 256


def get_config():
  return base.llama_pretraining("llama_7b", peak_lr=3e-4, tokens=1.0e12, seq_len=2048)
