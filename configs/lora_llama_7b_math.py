r"""LLaMA-7B + LoRA on math (Hu et al. 2023, "LLM-Adapters", EMNLP).

Reproduces: the LLaMA-7B LoRA row of Table 1 (six math test sets, accuracy %): MultiArith 95.0,
  GSM8K 37.5, AddSub 83.3, AQuA 18.9, SingleEq 84.4, SVAMP 52.1; average 61.9. LoRA r=32, alpha=64
  (scale 2), dropout 0.05 on q, k, v, up, down; math_10k.json (GSM8K, MAWPS and AQuA training
  questions with ChatGPT rationales) in LLM-Adapters' training template, cutoff 256, loss on all
  tokens, no held-out examples; AdamW b=(0.9, 0.999), no weight decay, lr 3e-4, 100 warmup steps
  then linear decay to 0, clipping 1.0, batch 16, 3 epochs (1,875 steps for the nominal 10,000
  examples; the recipe counts the file's examples when it is present), checkpoints every 200 steps.
  Family: llama_jax/training/llm_adapters.py.
Before: convert yahma/llama-7b-hf (python -m llama_jax.convert --from=hf --to=llama_jax
  --src=llama-7b-hf --dst=ckpt/llama_7b) and clone LLM-Adapters (ft-training_set/, dataset/) into
  the working directory, or override init_from, data.tokenizer and data.instructions.train_file
  (then --config.steps too).
Pending: the adapter settings (llm_adapters.ADAPTERS["lora"]) take effect once config.adapter exists
  (llama_jax/adapters); until then loading this recipe warns, and it would train every weight.
Command:
  python -m llama_jax.train --config=configs/lora_llama_7b_math.py \
      --workdir=runs/lora_llama_7b_math
  python -m llama_jax.evaluate --checkpoint=runs/lora_llama_7b_math --task=math \
      --data_dir=LLM-Adapters/dataset --num_beams=4 --batch_size=8 \
      --out=results/lora_llama_7b_math
Hardware: 4 accelerators with >= 40 GB, FSDP over the 4; bf16 weights and compute.
Expected: the row above, within the run-to-run spread of reproductions (the DoRA repository's reruns
  of these setups differ from it by several points). Time not measured: ~2.1e+17 training FLOPs, ~7
  min on 4 A100 at 40% MFU (an estimate), plus the beam-search evaluation.
"""
from llama_jax.training import llm_adapters

DEVICES = 4


def get_config():
  return llm_adapters.recipe("7b", "lora", "math")
