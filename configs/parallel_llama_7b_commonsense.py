r"""LLaMA-7B + Parallel on commonsense (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-7B Parallel row of Table 4 (commonsense, accuracy %): BoolQ 67.9, PIQA 76.4,
  SIQA 78.8, HellaSwag 69.8, WinoGrande 78.9, ARC-e 73.7, ARC-c 57.3, OBQA 75.2; average 72.3.
  Parallel adapters on `up` and `down` (bottleneck 256, tanh, scale 1, N(0, 0.02) init);
  commonsense_170k.json (the 8 tasks' training sets in one template) in LLM-Adapters' training
  template, cutoff 256, loss on all tokens, 120 held-out examples (held-out loss every 80 steps);
  AdamW b=(0.9, 0.999), no weight decay, lr 3e-4, 100 warmup steps then linear decay to 0, clipping
  1.0, batch 16, 3 epochs (31,853 steps for the nominal 170,000 examples; the recipe counts the
  file's examples when it is present), checkpoints every 80 steps. Family:
  llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-7b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-7b-hf --dst=ckpt/llama_7b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["parallel"]) take effect once config.adapter
  exists (llama_jax/adapters); until then loading this recipe warns, and it would train every
  weight.
Command:
  python -m llama_jax.train --config=configs/parallel_llama_7b_commonsense.py \
      --workdir=runs/parallel_llama_7b_commonsense
  python -m llama_jax.evaluate --checkpoint=runs/parallel_llama_7b_commonsense --task=commonsense \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/parallel_llama_7b_commonsense
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute.
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~3.5e+18 training FLOPs,
  ~2.0 h on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("7b", "parallel", "commonsense")
