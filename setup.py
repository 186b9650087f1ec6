"""llama_jax: LLaMA pretraining, context extension and PEFT in JAX/Flax.

Packaging notes: only `llama_jax` is installed (no top-level `configs` package that could shadow
a user's own). The recipes in `configs/*.py` are copied into the built package as
`llama_jax/recipes/`, so `python -m llama_jax.train --config=yarn_13b` finds them after a
non-editable install; in a checkout (and an editable install) they are read from `configs/`.
"""
import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithRecipes(build_py):
  """build_py that also ships configs/*.py as llama_jax/recipes/."""

  def run(self):
    super().run()
    target = Path(self.build_lib) / "llama_jax" / "recipes"
    target.mkdir(parents=True, exist_ok=True)
    for recipe in sorted(Path(__file__).resolve().parent.glob("configs/*.py")):
      shutil.copyfile(recipe, target / recipe.name)


setup(
    name="llama_jax",
    version="0.1.0",
    description=("LLaMA in JAX/Flax: pretraining, RoPE context extension (PI, NTK, YaRN, ...), "
                 "PEFT adapters."),
    packages=find_packages(include=["llama_jax", "llama_jax.*"]),
    cmdclass={"build_py": BuildWithRecipes},
    python_requires=">=3.11",
    install_requires=[
        "jax>=0.8.1",
        "flax>=0.12.0",
        "optax>=0.2.4",
        "orbax-checkpoint>=0.11.0",
        "tensorflow-datasets>=4.9.7",
        "grain>=0.2.12",
        "array-record>=0.7.0",
        "sentencepiece>=0.2.0",
        "ml-collections>=1.0.0",
        "absl-py>=2.1.0",
        "safetensors>=0.4.5",
        "numpy>=1.26",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "tqdm>=4.66",
    ],
    extras_require={
        # torch is pinned so pip takes the CPU wheel instead of a multi-GB CUDA build.
        "test": ["pytest>=8.0", "torch==2.13.0", "transformers>=5.0", "peft>=0.17", "ruff==0.17.6"],
        "gpu": ["jax[cuda12]>=0.8.1"],
        "tpu": ["jax[tpu]>=0.8.1"],
    },
)
