"""E²-LLM 7B: one Llama 2 7B fine-tune at 4k that serves 16k-64k (Liu, Bai et al. 2024, "E²-LLM").

Reproduces: the 7B rows of Table 3 (arXiv 2401.06951 v3, §5.1): Llama 2 7B, full fine-tuning
  at R = 4096 with E²-LLM's augmentation — every step draws a PI scale g ~ U{1..20} and an
  offset t ~ U{0..g·4096 - 4096} applied after 4 sink tokens (Alg. 1) — AdamW b=(0.9, 0.95),
  lr 1e-5, 30,000 steps of 16 sequences (1.97B tokens). Unstated in the paper and chosen here:
  constant lr, no warmup, no weight decay (/work/shared/reference/rope_methods.md §8;
  `training.defaults.e2llm_extension` lists every setting and the data substitution).
Before: convert the Llama 2 7B weights (the recipe's `init_from` and `data.tokenizer` defaults;
  override them if yours live elsewhere) and prepare TFDS `scientific_papers/arxiv`:
  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-7b-hf --dst=ckpt/llama2_7b
Command:
  python -m llama_jax.train --config=configs/e2llm_7b.py --workdir=runs/e2llm_7b
  # the g_max ablation point 10 (Table 5; `get_hyper` lists the grid 5/10/20/30 for a sweep):
  python -m llama_jax.train --config=configs/e2llm_7b.py:g_max=10 --workdir=runs/e2llm_7b_g10
Evaluate at 16k (g = 4 chosen from the length; Table 3's protocol: stride 256):
  python -m llama_jax.evaluate --checkpoint=runs/e2llm_7b --task=perplexity --files=... \
      --lengths=4096,8192,16384,32768 --stride=256 --e2llm_window=4096 --out=results/
Hardware: 16 GPUs with 80 GB (the paper's 2 x 8 A100), FSDP over the 16, one 4k sequence per
  device; any device count dividing 16 works with fewer devices per step (mesh fsdp=-1).
Expected: Proof-pile perplexity (Table 3, 7B, g chosen per length) 2.96 at 4k, 2.71 at 8k,
  2.54 at 16k with g=4; 2.46 at 32k with g=8; 2.56 at 64k with g=16; the passkey evaluation
  finds the key at 16k-32k. Time ~12 h on 16 A100 at 40% MFU (8.4e19 model FLOPs; full remat
  adds ~1/3).
"""
from llama_jax.training import defaults as base

DEVICES = 16


def get_config(arg=None):
  return base.e2llm_extension("llama2_7b", init_from="ckpt/llama2_7b",
                              tokenizer="Llama-2-7b-hf/tokenizer.model",
                              **base.recipe_options(arg, g_max=int, seed=int))


def get_hyper():
  """The g_max ablation (Table 5): one override dict per run."""
  return [{"augment.e2llm.g_max": g} for g in (5, 10, 20, 30)]
