#!/bin/bash
# The README's benchmark tables: two rounds of train / eval / generate on configs/bench_34m.py,
# each benchmark one process with llama_jax and HF + torch interleaved. The package tunes glibc
# malloc itself (core/allocator.py); --malloc=system keeps bench from preloading tcmalloc.
# Round 1 runs the eval/generate HF child on glibc's defaults, round 2 on the tuned heap; the
# train benchmark runs both HF variants in every round. Usage: experiments/bench/measure.sh OUT
set -e
OUT=${1:-experiments/bench/results}
B="python -m llama_jax.bench --config=configs/bench_34m.py --malloc=system"
for round in 1 2; do
  torch_malloc=$([ $round = 1 ] && echo system || echo tuned)
  echo "round $round $(date -u +%H:%M:%S) $(uptime)"
  $B --out=$OUT/train_$round --seq_lens=256,512,1024,2048 --steps=2 --warmup=1 \
     --impls=auto,hf_torch,hf_torch_system_malloc
  echo "eval $(uptime)"
  LLAMA_JAX_BENCH_TORCH_MALLOC=$torch_malloc $B --out=$OUT/eval_$round --mode=eval \
     --seq_lens=256,512,1024,2048 --steps=2 --warmup=1
  echo "generate $(uptime)"
  LLAMA_JAX_BENCH_TORCH_MALLOC=$torch_malloc $B --out=$OUT/generate_$round --mode=generate \
     --steps=2 --warmup=1
done
echo "done $(date -u +%H:%M:%S) $(uptime)"
