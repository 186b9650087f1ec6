"""`python -m llama_jax.malloc`: prints the path of an installed tcmalloc (exit status 1: none).

Why and how it is used: `llama_jax.perf.malloc`. `core.cli` runs `PROGRAM`.
"""
from llama_jax.core import cli
from llama_jax.perf import malloc

USAGE = """\
python -m llama_jax.malloc

Prints the path of an installed tcmalloc, for preloading it into a training run (exit status 1
when none is installed: `apt install libtcmalloc-minimal4`):

  LD_PRELOAD=$(python -m llama_jax.malloc) python -m llama_jax.train ..."""


def main(argv, flag_values=None):
  del argv, flag_values
  found = malloc.preloaded() or malloc.find_tcmalloc()
  if found:
    print(found)
  return cli.OK if found else cli.FAILURE


PROGRAM = cli.Program("malloc", USAGE, lambda fv: None, main)

if __name__ == "__main__":
  cli.run(PROGRAM)
