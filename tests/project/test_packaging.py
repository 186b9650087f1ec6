"""Packaging: a non-editable install ships the recipes inside llama_jax and installs nothing named
`configs`; a bare recipe name trains from any directory. Built from the tracked files only (what a
fresh checkout has), without network (`--no-build-isolation`, `--no-deps`)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llama_jax.training import recipes

ROOT = Path(__file__).resolve().parents[2]


def test_recipe_names_and_paths():
  assert {"tiny", "bench_34m", "yarn_13b", "llama2_7b"} <= set(recipes.names())
  assert recipes.path("tiny") == str(ROOT / "configs" / "tiny.py")
  assert recipes.path("yarn_7b:arg") == str(ROOT / "configs" / "yarn_7b.py") + ":arg"
  assert recipes.path("configs/tiny.py") == "configs/tiny.py"  # paths pass through unchanged
  assert recipes.resolve_argv(["train", "--config=tiny", "--config.steps=3"]) == [
      "train", f"--config={ROOT / 'configs' / 'tiny.py'}", "--config.steps=3"]
  with pytest.raises(ValueError, match=r"--config='tinyy' is neither a file nor a known recipe"):
    recipes.path("tinyy")
  assert recipes.load("tiny").steps > 0


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """The project built into a wheel from its tracked files and installed into a directory."""
  tmp = tmp_path_factory.mktemp("install")
  src = tmp / "src"
  files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                         check=True).stdout.decode().split("\0")
  for name in filter(None, files):
    if (ROOT / name).is_file():
      (src / name).parent.mkdir(parents=True, exist_ok=True)
      (src / name).write_bytes((ROOT / name).read_bytes())
  env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
  subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "-w", str(tmp / "wheels"), str(src)], check=True, env=env, timeout=600)
  wheel = next((tmp / "wheels").glob("llama_jax-*.whl"))
  site = tmp / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                  str(site), str(wheel)], check=True, env=env, timeout=600)
  return site


def _run(site, cwd, *args, timeout=900):
  env = dict(os.environ, PYTHONPATH=str(site), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                        timeout=timeout)


def test_a_non_editable_install_trains_a_recipe_by_name_from_anywhere(installed, tmp_path):
  assert not (installed / "configs").exists()
  assert (installed / "llama_jax" / "recipes" / "yarn_13b.py").is_file()
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  where = _run(installed, elsewhere, "-c", "import llama_jax; print(llama_jax.__file__)")
  assert where.stdout.strip().startswith(str(installed)), where.stdout + where.stderr
  run = _run(installed, elsewhere, "-m", "llama_jax.train", "--config=tiny",
             "--config.steps=20", "--config.eval_every=10", "--config.checkpoint_every=0",
             "--config.sample_tokens=4", f"--workdir={tmp_path / 'run'}")
  assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
  assert "step 20/20" in run.stdout and "held-out loss" in run.stdout
  assert (tmp_path / "run" / "checkpoints" / "20").is_dir()
  # Nothing named `configs` is importable there (the wheel installs llama_jax only).
  top_level = {p.name.split("-")[0] for p in installed.iterdir()}
  assert top_level <= {"llama_jax", "bin"}, top_level
  assert _run(installed, elsewhere, "-c", "import configs").returncode != 0


def test_recipes_import_only_from_llama_jax():
  """An installed package has no top-level `configs`: a recipe that builds on another loads it
  by name (`recipes.load`), never `from configs import ...`."""
  offenders = [p.name for p in (ROOT / "configs").glob("*.py")
               if "from configs" in p.read_text() or "import configs" in p.read_text()]
  assert offenders == []
