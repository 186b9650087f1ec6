"""The adapters miniature (experiments/adapters/): its data keep train and test numbers apart
and match the math evaluator's rules, its recipes validate, and its driver runs end to end at
smoke size, writing its records (not checking accuracy: a few steps teach nothing)."""
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llama_jax.evals import answers
from llama_jax.training import recipes, validation

ROOT = Path(__file__).resolve().parents[2]
HERE = ROOT / "experiments" / "adapters"
METHODS = ("full", "lora", "series", "parallel", "prefix")


def _make_data():
  spec = importlib.util.spec_from_file_location("_miniature_make_data", HERE / "make_data.py")
  module = importlib.util.module_from_spec(spec)
  sys.modules[spec.name] = module  # its dataclasses look their module up
  spec.loader.exec_module(module)
  return module


def _operands(text: str) -> list[int]:
  """The numbers a problem gives (its question's numbers)."""
  return [int(n) for n in re.findall(r"\d+", text)]


def _pairs(text: str) -> list[tuple[int, int]]:
  """The (x, y) of every `x + y =` / `x - y =` written in a text."""
  return [(int(x), int(y)) for x, y in re.findall(r"(\d+) [+-] (\d+) =", text)]


@pytest.mark.parametrize("split", ["pairs", "numbers"])
def test_data_keep_train_and_test_apart(split, tmp_path):
  make_data = _make_data()
  manifest = make_data.write(tmp_path, make_data.SMOKE, seed=3, split=split)
  assert manifest["split"] == split
  held = set(make_data.test_numbers(make_data.SMOKE.max_number))
  train = json.loads((tmp_path / "train.json").read_text())
  assert len(train) == make_data.SMOKE.train
  for example in train:
    assert set(example) == {"instruction", "input", "output"} and example["input"] == ""
    if split == "pairs":
      assert not any(make_data.is_test_pair(*p) for p in _pairs(example["output"]))
    else:
      assert not set(_operands(example["instruction"])) & held
  for name in make_data.TEST_SETS:
    items = json.loads((tmp_path / "test" / name / "test.json").read_text())
    assert len(items) == make_data.SMOKE.test
    for item in items:
      if split == "pairs":
        assert all(make_data.is_test_pair(*p) for p in _pairs(item["output"]))
      else:
        assert set(_operands(item["instruction"])) <= held
      # The evaluator's rule reads the reference rationale's answer as the label.
      assert answers.score_math(name, item["output"], item["answer"])[1]
  text = "".join(doc.read_text() for doc in (tmp_path / "corpus").glob("*.txt"))
  # Stories and equations over all the arithmetic, and questions in the template whose
  # answer is a number of the question, copied: no templated entry computes anything.
  assert " + " in text and " - " in text
  lookups = text.split("Below is an instruction")[1:]
  assert lookups
  for entry in lookups:
    question, response = entry.split("### Response:")
    response = response.strip().splitlines()[0]
    answer = int(re.fullmatch(r".*The answer is (\d+)\.", response).group(1))
    assert "How many" in question and answer in _operands(question)
    assert not _pairs(question) and not _pairs(response)
  # Reused as is when asked again with the same scale, seed and split.
  before = (tmp_path / "train.json").stat().st_mtime_ns
  make_data.write(tmp_path, make_data.SMOKE, seed=3, split=split)
  assert (tmp_path / "train.json").stat().st_mtime_ns == before


@pytest.mark.parametrize("scale", ["full", "smoke"])
def test_recipes_validate(scale):
  c = recipes.load(f"{HERE / 'pretrain.py'}:scale={scale}")
  base = validation.validate(c, check_paths=False).model
  shares = {}
  for method in METHODS:
    c = recipes.load(f"{HERE / 'finetune.py'}:method={method},scale={scale}")
    tc = validation.validate(c, check_paths=False)
    assert tc.model == base  # every fine-tune starts from the same base
    shares[method] = tc.spec.num_params(True) / tc.spec.num_params()
  assert shares["full"] == 1.0
  assert all(0 < shares[m] < 0.1 for m in METHODS[1:])


def test_recipe_argument_errors():
  with pytest.raises(ValueError, match="method='adalora'"):
    recipes.load(f"{HERE / 'finetune.py'}:method=adalora")
  with pytest.raises(ValueError, match="scale='huge'"):
    recipes.load(f"{HERE / 'pretrain.py'}:scale=huge")


def test_smoke_run_writes_its_records(tmp_path):
  methods = ("full", "prefix")  # the whole-model path and an adapter (the others: test above)
  out = tmp_path / "out"
  # One CPU device, as on the 2-core machine the miniature is sized for (conftest simulates 8,
  # which a smoke batch of 2 cannot be split over); the fast compile flag stays.
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env = dict(os.environ, XLA_FLAGS=" ".join(flags))
  proc = subprocess.run(
      [sys.executable, str(HERE / "run.py"), "--smoke", f"--work={tmp_path / 'work'}",
       f"--out={out}", f"--methods={','.join(methods)}"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  assert list(results["runs"]) == ["base", *methods]
  for name, run in results["runs"].items():
    assert set(run["accuracy"]) == {"AddSub", "MultiArith"}
    assert 0 <= run["average"] <= 1
    assert set(run["diagnosis"]) == {"copied", "operation", "own_arithmetic", "format"}
    if name == "base":
      continue
    for key in ("trainable_params", "trainable_share", "step_ms", "max_rss_mib", "xla_step_mib",
                "final_loss", "wall_s", "lr"):
      assert run[key] > 0, (name, key)
  assert results["runs"]["full"]["trainable_share"] == 1.0
  assert results["runs"]["prefix"]["trainable_share"] < 0.01
  table = (out / "results.md").read_text()
  assert "| Full fine-tuning |" in table and "| Prefix tuning |" in table
  assert (out / "results.png").stat().st_size > 1000
