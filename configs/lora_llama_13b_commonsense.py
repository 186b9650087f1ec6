r"""LLaMA-13B + LoRA on commonsense (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-13B LoRA row of Table 4 (commonsense, accuracy %): BoolQ 72.1, PIQA 83.5, SIQA
  80.5, HellaSwag 90.5, WinoGrande 83.7, ARC-e 82.8, ARC-c 68.3, OBQA 82.4; average 80.5. LoRA r=32,
  alpha=64 (scale 2), dropout 0.05 on q, k, v, up, down; commonsense_170k.json (the 8 tasks'
  training sets in one template) in LLM-Adapters' training template, cutoff 256, loss on all tokens,
  120 held-out examples (held-out loss every 80 steps); AdamW b=(0.9, 0.999), no weight decay, lr
  3e-4, 100 warmup steps then linear decay to 0, clipping 1.0, batch 16, 3 epochs (31,853 steps for
  the nominal 170,000 examples; the recipe counts the file's examples when it is present),
  checkpoints every 80 steps. Family: llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-13b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-13b-hf --dst=ckpt/llama_13b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["lora"]) take effect once config.adapter exists
  (llama_jax/adapters); until then loading this recipe warns, and it would train every weight.
Command:
  python -m llama_jax.train --config=configs/lora_llama_13b_commonsense.py \
      --workdir=runs/lora_llama_13b_commonsense
  python -m llama_jax.evaluate --checkpoint=runs/lora_llama_13b_commonsense --task=commonsense \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/lora_llama_13b_commonsense
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute, full remat (their
  gradient checkpointing).
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~1.0e+19 training FLOPs,
  ~5.7 h on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("13b", "lora", "commonsense")
