r"""LLaMA-7B + Parallel on math (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-7B Parallel row of Table 1 (six math test sets, accuracy %): MultiArith 94.5,
  GSM8K 35.3, AddSub 86.6, AQuA 18.1, SingleEq 86.0, SVAMP 49.6; average 61.7. Parallel adapters on
  `up` and `down` (bottleneck 256, tanh, scale 1, N(0, 0.02) init); math_10k.json (GSM8K, MAWPS and
  AQuA training questions with ChatGPT rationales) in LLM-Adapters' training template, cutoff 256,
  loss on all tokens, no held-out examples; AdamW b=(0.9, 0.999), no weight decay, lr 3e-4, 100
  warmup steps then linear decay to 0, clipping 1.0, batch 16, 3 epochs (1,875 steps for the nominal
  10,000 examples; the recipe counts the file's examples when it is present), checkpoints every 200
  steps. Family: llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-7b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-7b-hf --dst=ckpt/llama_7b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["parallel"]) take effect once config.adapter
  exists (llama_jax/adapters); until then loading this recipe warns, and it would train every
  weight.
Command:
  python -m llama_jax.train --config=configs/parallel_llama_7b_math.py \
      --workdir=runs/parallel_llama_7b_math
  python -m llama_jax.evaluate --checkpoint=runs/parallel_llama_7b_math --task=math \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/parallel_llama_7b_math
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute.
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~2.1e+17 training FLOPs, ~7
  min on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("7b", "parallel", "math")
