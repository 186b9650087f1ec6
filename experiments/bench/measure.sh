#!/bin/bash
# The README's benchmark tables: configs/bench_34m.py, llama_jax against HF + torch, each
# benchmark one process with the two sides interleaved. The package tunes glibc malloc itself
# (core/allocator.py); --malloc=system keeps bench from preloading a tcmalloc (a fresh machine
# has none). Round 1: train at four lengths with both HF heaps, eval and generate with the HF
# child on glibc's defaults. Round 2 (cut short on 2 December 2026 for time): generate, and eval
# at 1,024 tokens, with the HF child on the tuned heap. Then:
#   python experiments/bench/plot.py experiments/bench/results docs/bench_ratios.png
# Usage: experiments/bench/measure.sh [OUT]; check `uptime` first (the load skews the ratios).
set -e
OUT=${1:-experiments/bench/results}
B="python -m llama_jax.bench --config=configs/bench_34m.py --malloc=system"
echo "round 1 $(date -u +%H:%M:%S) $(uptime)"
$B --out=$OUT/train_1 --seq_lens=256,512,1024,2048 --steps=2 --warmup=1 \
   --impls=auto,hf_torch,hf_torch_system_malloc
LLAMA_JAX_BENCH_TORCH_MALLOC=system $B --out=$OUT/eval_1 --mode=eval \
   --seq_lens=256,512,1024,2048 --steps=2 --warmup=1
LLAMA_JAX_BENCH_TORCH_MALLOC=system $B --out=$OUT/generate_1 --mode=generate --steps=2 --warmup=1
echo "round 2 $(date -u +%H:%M:%S) $(uptime)"
LLAMA_JAX_BENCH_TORCH_MALLOC=tuned $B --out=$OUT/generate_2 --mode=generate --steps=1 --warmup=1
LLAMA_JAX_BENCH_TORCH_MALLOC=tuned $B --out=$OUT/eval_2 --mode=eval --seq_lens=1024 --steps=1 \
   --warmup=1
echo "done $(date -u +%H:%M:%S) $(uptime)"
