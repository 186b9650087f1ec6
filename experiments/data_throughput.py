"""Tokens per second of the training data iterator alone, on the standard-library corpus.

Uses `configs/tiny.py`'s data settings (the Python standard library, a 2048-token tokenizer
trained at first run, packing with BOS/EOS) at seq_len 256 and global batch 16, and reports:
  - the one-time preparation (corpus -> ArrayRecord, tokenizer training, tokenization), timed
    only when the cache directory is empty;
  - the time to build the iterator and get its first batch from a warm cache;
  - the steady rate: tokens/s over `--batches` batches after `--warmup` batches.
Goal: >= 100k tokens/s, >= 10x what the tiny model trains at on this machine.

  python experiments/data_throughput.py                          # fresh cache in a temp dir
  python experiments/data_throughput.py --cache_dir=~/.cache/llama_jax --num_workers=2
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--cache_dir", default="", help="default: a fresh temporary directory")
  parser.add_argument("--seq_len", type=int, default=256)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--batches", type=int, default=500)
  parser.add_argument("--warmup", type=int, default=20)
  parser.add_argument("--num_workers", type=int, default=0)
  parser.add_argument("--pack", type=int, default=1)
  args = parser.parse_args()

  from llama_jax import data
  from llama_jax.training import recipes

  config = recipes.load("tiny")
  temp = None
  if not args.cache_dir:
    temp = tempfile.mkdtemp(prefix="llama_jax_data_throughput-")
  config.data.cache_dir = args.cache_dir or temp
  config.data.num_workers = args.num_workers
  config.data.pack = bool(args.pack)
  cache = os.path.expanduser(config.data.cache_dir)
  cold = not os.path.isdir(cache) or not os.listdir(cache)
  result = {"seq_len": args.seq_len, "batch_size": args.batch_size,
            "num_workers": args.num_workers, "pack": bool(args.pack), "cold_cache": cold}
  try:
    t0 = time.perf_counter()
    tok = data.load_or_train_tokenizer(config.data, vocab_size=config.model.vocab_size)
    t1 = time.perf_counter()
    it = data.make_iterator(config.data, tok, split="train", batch_size=args.batch_size,
                            seq_len=args.seq_len, seed=config.seed)
    next(it)
    t2 = time.perf_counter()
    result.update(tokenizer_s=round(t1 - t0, 2), first_batch_s=round(t2 - t1, 2),
                  vocab_size=tok.vocab_size, documents=len(it.stream.docs),
                  corpus_tokens=it.stream.num_tokens, rows_per_epoch=it.stream.rows_per_epoch)
    for _ in range(args.warmup):
      next(it)
    real = 0
    start = time.perf_counter()
    for _ in range(args.batches):
      batch = next(it)
      real += int((batch["segment_ids"] > 0).sum())
    elapsed = time.perf_counter() - start
    tokens = args.batches * args.batch_size * args.seq_len
    result.update(seconds=round(elapsed, 3), tokens_per_s=round(tokens / elapsed),
                  non_padding_fraction=round(real / tokens, 4))
    it.close()
    # Warm start: what a second run (or a resumed one) pays before its first batch.
    t3 = time.perf_counter()
    tok = data.load_or_train_tokenizer(config.data, vocab_size=config.model.vocab_size)
    it = data.make_iterator(config.data, tok, split="train", batch_size=args.batch_size,
                            seq_len=args.seq_len, seed=config.seed)
    next(it)
    result["warm_start_s"] = round(time.perf_counter() - t3, 2)
    it.close()
  finally:
    if temp:
      shutil.rmtree(temp, ignore_errors=True)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
