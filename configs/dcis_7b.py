"""DCIS: Llama 2 7B extended to 64k with searched RoPE factors, fine-tuned on 16k sequences.

Reproduces: the Llama-2-7B run of DCIS (Yang et al., EMNLP 2025, "divide-and-conquer incremental
  search"), as the authors' code runs it (/work/shared/reference/rope_methods.md §9, fine-tuning
  table): factors searched at s = 16 (64k = 16 x 4096) on one PG19 validation document of
  >= 64k tokens; then 400 steps of full fine-tuning, 64 sequences of 16,384 tokens per step
  (PG19, "fine-tune short, generalise long"), AdamW b=(0.9, 0.95), eps 1e-8, lr 2e-5 with 20
  linear warmup steps then linear decay to 0 (DeepSpeed WarmupDecayLR), no weight decay, bf16,
  full remat. RoPE: rope_type longrope with the searched λ at every length and the temperature
  0.1 ln 16 + 1 = 1.2773 (what `python -m llama_jax.search` writes to rope.json).
  Without a rope.json the recipe uses DCIS's start, the YaRN-equivalent λ (the baseline of the
  "DCIS beats YaRN after the same fine-tune" comparison).
Before: convert Llama 2 7B (the recipe's `init_from` / `data.tokenizer` defaults) and prepare the
  TFDS pg19 dataset; then search (one document, 1,261 forward passes of 64k tokens):
  python -m llama_jax.search --method=dcis --checkpoint=ckpt/llama2_7b \
      --tokenizer=Llama-2-7b-hf/tokenizer.model --dataset=pg19 --split=validation \
      --text_key=book_text --target_len=65536 --factor=16 --attention=chunked \
      --dtype=bfloat16 --out=runs/dcis_7b_search
Command:
  python -m llama_jax.train --config=configs/dcis_7b.py --workdir=runs/dcis_7b \
      --rope_json=runs/dcis_7b_search/rope.json
  (or --config=configs/dcis_7b.py:runs/dcis_7b_search/rope.json); evaluate as the paper does:
  python -m llama_jax.evaluate --checkpoint=runs/dcis_7b --task=perplexity --truncate \
      --files='proof_pile_test/*.txt' --min_tokens=131072 --max_documents=10 \
      --lengths=4096,8192,16384,32768,65536 --attention=chunked --out=results/dcis_7b
Hardware: 4 GPUs with 80 GB (the authors' 4 x A100), FSDP over the 4, 2 sequences per device per
  micro-batch, 8 micro-batches per step; or any multiple of 4 devices.
Expected: the paper's perplexity and passkey numbers were not verified (reference notes §9); the
  orderings to check are: without fine-tuning the DCIS λ gives lower 64k perplexity than its YaRN
  start, and after this fine-tune the DCIS run beats the same recipe on the YaRN λ at 64k.
  Time: search ~5.6 h on one A100 (2.5e18 forward FLOPs at 40% MFU), fine-tune ~12 h on
  4 x A100 at 40% MFU (2.2e19 model FLOPs; full remat adds ~1/3).
"""
from llama_jax.rope.config import read_json
from llama_jax.search import factors
from llama_jax.training import defaults as base

DEVICES = 4
FACTOR = 16
TRAIN_LEN = 16384


def get_config(rope_json: str | None = None):
  c = base.yarn_extension("llama2_7b", factor=FACTOR, steps=400, init_from="ckpt/llama2_7b",
                          tokenizer="Llama-2-7b-hf/tokenizer.model")
  if rope_json:
    rope = read_json(rope_json)
  else:
    start = factors.yarn_start(FACTOR, 128, 10000.0, base.YARN_ORIGINAL_LENGTH)
    rope = factors.rope_parameters(start, FACTOR, base.YARN_ORIGINAL_LENGTH, 10000.0)
  base.set_rope(c, rope)
  c.seq_len = TRAIN_LEN
  c.batch_size = 64
  c.grad_accum = 8
  return c
