"""`python -m llama_jax.malloc`: prints the path of an installed tcmalloc (exit status 1: none).

  LD_PRELOAD=$(python -m llama_jax.malloc) python -m llama_jax.train ...

Why and how it is used: `llama_jax.perf.malloc`.
"""
import sys

from llama_jax.perf import malloc

if __name__ == "__main__":
  found = malloc.preloaded() or malloc.find_tcmalloc()
  if found:
    print(found)
  sys.exit(0 if found else 1)
