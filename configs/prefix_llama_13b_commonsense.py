r"""LLaMA-13B + Prefix on commonsense (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-13B Prefix row of Table 4 (commonsense, accuracy %): BoolQ 65.3, PIQA 75.4,
  SIQA 72.1, HellaSwag 55.2, WinoGrande 68.6, ARC-e 79.5, ARC-c 62.9, OBQA 68.0; average 68.4.
  Prefix tuning with 10 virtual tokens; commonsense_170k.json (the 8 tasks' training sets in one
  template) in LLM-Adapters' training template, cutoff 256, loss on all tokens, 120 held-out
  examples (held-out loss every 80 steps); AdamW b=(0.9, 0.999), no weight decay, lr 3e-2, 100
  warmup steps then linear decay to 0, clipping 1.0, batch 8, 5 epochs (106,175 steps for the
  nominal 170,000 examples; the recipe counts the file's examples when it is present), checkpoints
  every 80 steps. Family: llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-13b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-13b-hf --dst=ckpt/llama_13b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["prefix"]) take effect once config.adapter
  exists (llama_jax/adapters); until then loading this recipe warns, and it would train every
  weight.
Command:
  python -m llama_jax.train --config=configs/prefix_llama_13b_commonsense.py \
      --workdir=runs/prefix_llama_13b_commonsense
  python -m llama_jax.evaluate --checkpoint=runs/prefix_llama_13b_commonsense --task=commonsense \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/prefix_llama_13b_commonsense
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute, full remat (their
  gradient checkpointing).
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~1.7e+19 training FLOPs,
  ~9.4 h on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("13b", "prefix", "commonsense")
