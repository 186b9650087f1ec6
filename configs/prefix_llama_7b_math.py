r"""LLaMA-7B + Prefix on math (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-7B Prefix row of Table 1 (six math test sets, accuracy %): MultiArith 63.2,
  GSM8K 24.4, AddSub 57.0, AQuA 14.2, SingleEq 55.3, SVAMP 38.1; average 42.0. Prefix tuning with 10
  virtual tokens; math_10k.json (GSM8K, MAWPS and AQuA training questions with ChatGPT rationales)
  in LLM-Adapters' training template, cutoff 256, loss on all tokens, 120 held-out examples
  (held-out loss every 10 steps); AdamW b=(0.9, 0.999), no weight decay, lr 3e-2, 100 warmup steps
  then linear decay to 0, clipping 1.0, batch 8, 5 epochs (6,175 steps for the nominal 10,000
  examples; the recipe counts the file's examples when it is present), checkpoints every 10 steps.
  Family: llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-7b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-7b-hf --dst=ckpt/llama_7b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["prefix"]) take effect once config.adapter
  exists (llama_jax/adapters); until then loading this recipe warns, and it would train every
  weight.
Command:
  python -m llama_jax.train --config=configs/prefix_llama_7b_math.py \
      --workdir=runs/prefix_llama_7b_math
  python -m llama_jax.evaluate --checkpoint=runs/prefix_llama_7b_math --task=math \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/prefix_llama_7b_math
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute.
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~3.4e+17 training FLOPs, ~11
  min on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("7b", "prefix", "math")
