r"""LLaMA-13B + Series on math (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-13B Series row of Table 1 (six math test sets, accuracy %): MultiArith 93.0,
  GSM8K 44.0, AddSub 80.5, AQuA 22.0, SingleEq 87.6, SVAMP 50.8; average 63.0. A Series adapter
  after the MLP (bottleneck 256 on `down`, tanh, scale 1, N(0, 0.02) init); math_10k.json (GSM8K,
  MAWPS and AQuA training questions with ChatGPT rationales) in LLM-Adapters' training template,
  cutoff 256, loss on all tokens, 120 held-out examples (held-out loss every 80 steps); AdamW
  b=(0.9, 0.999), no weight decay, lr 3e-4, 100 warmup steps then linear decay to 0, clipping 1.0,
  batch 16, 3 epochs (1,853 steps for the nominal 10,000 examples; the recipe counts the file's
  examples when it is present), checkpoints every 80 steps. Family:
  llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-13b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-13b-hf --dst=ckpt/llama_13b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["series"]) take effect once config.adapter
  exists (llama_jax/adapters); until then loading this recipe warns, and it would train every
  weight.
Command:
  python -m llama_jax.train --config=configs/series_llama_13b_math.py \
      --workdir=runs/series_llama_13b_math
  python -m llama_jax.evaluate --checkpoint=runs/series_llama_13b_math --task=math \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/series_llama_13b_math
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute, full remat (their
  gradient checkpointing).
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~5.9e+17 training FLOPs, ~20
  min on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("13b", "series", "math")
