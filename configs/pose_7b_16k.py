"""PoSE: LLaMA-7B extended from 2k to 16k by training at 2k (Zhu et al. 2024, "PoSE", §4.1).

Reproduces: "PoSE 2k->16k" of Table 1 (arXiv 2309.10400): LLaMA-7B with linear RoPE scaling
  s = 8 (max_position_embeddings 16384), trained on 2,048-token rows whose positions skip
  into the 16k window (`pose` augmentation: two chunks, r1 ~ U{1..1024}, u ~ U{0..14336});
  1,000 steps of 64 sequences, lr 2e-5, 10 warmup steps then linear decay to 0, AdamW
  b=(0.9, 0.999), no weight decay (the authors' script with its DeepSpeed/HF Trainer defaults;
  /work/shared/reference/rope_methods.md §10). Data: TFDS pg19 in place of the paper's Pile
  split, which is not in TFDS; the text skip of chunk 2 is not done (see augment/pose.py).
Before: convert LLaMA-7B (the recipe's `init_from` and `data.tokenizer` defaults) and prepare
  TFDS `pg19`:
  python -m llama_jax.convert --from=meta --to=llama_jax --src=llama-7b --dst=ckpt/llama_7b
Command:
  python -m llama_jax.train --config=configs/pose_7b_16k.py --workdir=runs/pose_7b_16k
Evaluate with plain positions (the trained linear scaling is in the checkpoint's config):
  python -m llama_jax.evaluate --checkpoint=runs/pose_7b_16k --task=perplexity --files=... \
      --lengths=2048,4096,8192,16384 --stride=1024 --out=results/
Hardware: 8 GPUs with 40-80 GB (the paper used 8 V100-32GB with ZeRO-3 and CPU offload), FSDP
  over the 8, 8 sequences of 2k per device.
Expected: sliding-window perplexity at 16k (stride 1,024, documents > 32k tokens) 4.60 on
  GovReport and 2.60 on Proof-pile (Table 1; full-length 16k fine-tuning: 4.59 / 2.53);
  passkey >= 90% up to 16k (Fig. 2). Time ~1.5 h on 8 A100 at 40% MFU (5.4e18 model FLOPs).
"""
from llama_jax.training import defaults as base

DEVICES = 8


def get_config():
  return base.pose_extension(init_from="ckpt/llama_7b", tokenizer="llama-7b/tokenizer.model")
