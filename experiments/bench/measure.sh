#!/bin/bash
# The README's benchmark tables: configs/bench_34m.py, llama_jax against HF + torch, each
# benchmark one process with the two sides interleaved. The package tunes glibc malloc itself
# (core/allocator.py); --malloc=system keeps bench from preloading a tcmalloc (a fresh machine
# has none). Each round: train at four lengths against HF on the same tuned heap and on glibc's
# defaults (an independent HF script on a fresh machine), then eval and generate with the HF
# child on glibc's defaults. Then:
#   python experiments/bench/plot.py experiments/bench/results docs/bench_ratios.png
# Usage: experiments/bench/measure.sh [OUT] [ROUNDS]; check `uptime` first (load skews ratios).
set -e
OUT=${1:-experiments/bench/results}
ROUNDS=${2:-2}
B="python -m llama_jax.bench --config=configs/bench_34m.py --malloc=system"
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r train $(date -u +%H:%M:%S) $(uptime)"
  $B --out="$OUT/train_$r" --seq_lens=256,512,1024,2048 --steps=2 --warmup=1 \
     --impls=auto,hf_torch,hf_torch_system_malloc
  echo "round $r eval $(date -u +%H:%M:%S) $(uptime)"
  LLAMA_JAX_BENCH_TORCH_MALLOC=system $B --out="$OUT/eval_$r" --mode=eval \
     --seq_lens=256,512,1024,2048 --steps=2 --warmup=1
  echo "round $r generate $(date -u +%H:%M:%S) $(uptime)"
  LLAMA_JAX_BENCH_TORCH_MALLOC=system $B --out="$OUT/generate_$r" --mode=generate --steps=2 \
     --warmup=1
done
echo "done $(date -u +%H:%M:%S) $(uptime)"
