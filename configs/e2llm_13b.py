"""E²-LLM 13B and its g_max ablation (Liu, Bai et al. 2024, "E²-LLM", Tables 1-5).

Reproduces: the 13B rows of Table 3 and the g_max ablation of Table 5 (arXiv 2401.06951 v3,
  §5.1): Llama 2 13B, full fine-tuning at R = 4096 with E²-LLM's augmentation — every step
  draws a PI scale g ~ U{1..g_max} (20 by default) and an offset t ~ U{0..g·4096 - 4096}
  applied after 4 sink tokens (Alg. 1) — AdamW b=(0.9, 0.95), lr 1e-5, 30,000 steps of 16
  sequences. Unstated in the paper and chosen here: constant lr, no warmup, no weight decay
  (`training.defaults.e2llm_extension` lists every setting and the data substitution).
Before: convert the Llama 2 13B weights (`init_from`, `data.tokenizer`) and prepare TFDS
  `scientific_papers/arxiv`:
  python -m llama_jax.convert --from=hf --to=llama_jax --src=Llama-2-13b-hf --dst=ckpt/llama2_13b
Command:
  python -m llama_jax.train --config=configs/e2llm_13b.py --workdir=runs/e2llm_13b
  # one point of the ablation (`get_hyper` returns the grid 5/10/20/30 for a sweep tool):
  python -m llama_jax.train --config=configs/e2llm_13b.py:g_max=10 --workdir=runs/e2llm_13b_g10
Evaluate with g chosen from the length:
  python -m llama_jax.evaluate --checkpoint=runs/e2llm_13b --task=perplexity --files=... \
      --lengths=4096,16384,32768,65536 --stride=256 --e2llm_window=4096 --out=results/
Hardware: 16 GPUs with 80 GB (the paper's 2 x 8 A100), FSDP over the 16 (~13 GB of parameters
  and Adam state per device), one 4k sequence per device.
Expected: Proof-pile perplexity (Table 3, 13B) 2.82 / 2.59 / 2.43 at 4k / 8k / 16k with g=4,
  2.34 at 32k with g=8, 2.44 at 64k with g=16; LongBench All 41.74 at 32k (Table 4). The
  ablation (Table 5, LongBench All): g_max 5 / 10 / 20 / 30 -> 40.12 / 41.15 / 41.74 / 41.51,
  i.e. 20 is on the plateau. Time ~23 h per run on 16 A100 at 40% MFU (1.6e20 model FLOPs;
  full remat adds ~1/3).
"""
from llama_jax.training import defaults as base

DEVICES = 16


def get_config(arg=None):
  return base.e2llm_extension("llama2_13b", init_from="ckpt/llama2_13b",
                              tokenizer="Llama-2-13b-hf/tokenizer.model",
                              **base.recipe_options(arg, g_max=int, seed=int))


def get_hyper():
  """The g_max ablation (Table 5): one override dict per run."""
  return [{"augment.e2llm.g_max": g} for g in (5, 10, 20, 30)]
