"""Math / commonsense task evaluation: LLM-Adapters' answer extraction on tricky outputs, scoring
of canned generations through the whole pipeline, the command line (JSON, table, plot), use
during training, and bad test files (file and line named, nothing written)."""
import json
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from llama_jax import evals
from llama_jax import evaluate as evaluate_lib
from llama_jax.core.errors import ConfigError, DataError
from llama_jax.data import instructions
from llama_jax.data import tokenizer as tokenizer_lib
from llama_jax.evals import answers, registry
from llama_jax.model import llama as model_lib
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig

INF = math.inf


# ------------------------------------------------------------------------------ extraction
# (text, last number) — their rule: commas removed, the last match of -?\d+\.?\d*, else inf.
NUMBERS = [
    ("The answer is 1,234.", 1234.0),
    ("Total: 1,000,000.00 dollars", 1000000.0),
    ("She ends with -3 apples.", -3.0),
    ("3.5 + 2 = 5.5", 5.5),
    ("so the answer is 5.", 5.0),
    ("version 1.5.2", 2.0),  # matches "1.5" and "2"
    ("-.5 of it", 5.0),  # "-" needs a digit right after it
    ("10-3=7", 7.0),  # "10", "-3", "7"
    ("12 cookies, 5 eaten, 7 left over", 7.0),
    ("There is no number here.", INF),
    ("", INF),
]


@pytest.mark.parametrize("text,want", NUMBERS)
def test_last_number(text, want):
  assert answers.extract_number(text) == want


# (text, first capital A-E) — their AQuA rule, fragile by design.
LETTERS = [
    ("The answer is (B) 12 km/h.", "B"),
    ("A train travels at 60 km/h ... so the answer is C.", "A"),  # "A train" counts
    ("Rationale: 3 x 4 = 12. Answer: D", "A"),  # the A of "Answer"
    ("the speed is 12, option e", ""),  # lowercase only
    ("Each Day has 24 hours", "E"),
    ("", ""),
]


@pytest.mark.parametrize("text,want", LETTERS)
def test_first_letter(text, want):
  assert answers.extract_letter(text) == want


# (dataset, text, first answer word)
WORDS = [
    ("boolq", "the correct answer is true", "true"),
    ("boolq", "The correct answer is True", ""),  # lowercase only
    ("boolq", "false, it is not true", "false"),
    ("piqa", "the correct answer is solution2", "solution2"),
    ("piqa", "solution1 or solution2", "solution1"),
    ("social_i_qa", "the correct answer is Answer3", ""),
    ("social_i_qa", "the correct answer is answer3", "answer3"),
    ("ARC-Challenge", "answer12", "answer1"),  # a prefix match
    ("ARC-Easy", "answer5 is right", "answer5"),
    ("openbookqa", "the correct answer is answer4", "answer4"),
    ("hellaswag", "ending5 then ending2", "ending2"),  # ending5 is not in the vocabulary
    ("winogrande", "the correct answer is option2", "option2"),
    ("winogrande", "no idea", ""),
]


@pytest.mark.parametrize("dataset,text,want", WORDS)
def test_first_answer_word(dataset, text, want):
  assert answers.extract_commonsense(dataset, text) == want


def test_scoring_rules():
  assert answers.score_math("gsm8k", "so 576 in total", "576.0") == (576.0, True)
  assert answers.score_math("SVAMP", "about 0.3334", 0.333) == (0.3334, True)  # |d| <= 0.001
  assert answers.score_math("SVAMP", "about 0.335", 0.333)[1] is False
  assert answers.score_math("AddSub", "no idea", "3") == (INF, False)
  assert answers.score_math("AQuA", "Answer: B", "B") == ("A", False)
  assert answers.score_math("AQuA", "the answer is (b) or B", "B") == ("B", True)
  assert answers.score_commonsense("boolq", "the correct answer is true", "true") == \
      ("true", True)
  # The response is the text between the prompt's marker and any the model writes itself.
  decoded = instructions.eval_prompt("Q?") + "The answer is 4.\n### Response: 5"
  assert answers.response(decoded) == "The answer is 4."


# ------------------------------------------------------------------------------ fixtures
MATH_ITEMS = {
    "gsm8k": [("What is 2 + 2?", "4.0"), ("What is 10 * 3?", "30"), ("What is 7 - 9?", -2)],
    "AQuA": [("Pick the prime. Answer Choices: (A) 4 (B) 7", "B"),
             ("Pick the even. Answer Choices: (A) 4 (B) 7", "A")],
}
COMMONSENSE_ITEMS = {
    "boolq": [("Please answer with true or false: is fire hot?", "true"),
              ("Please answer with true or false: is ice hot?", "false")],
    "ARC-Easy": [("Which is a mammal? Answer1: cat Answer2: trout", "answer1")],
}


def _write_sets(root: Path, sets: dict) -> Path:
  for name, items in sets.items():
    (root / name).mkdir(parents=True, exist_ok=True)
    records = [{"instruction": q, "input": "", "output": "", "answer": a} for q, a in items]
    (root / name / "test.json").write_text(json.dumps(records, indent=4))
  return root


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  root = tmp_path_factory.mktemp("tok")
  text = [instructions.eval_prompt(q) + " The answer is 42. the correct answer is answer1 true"
          for items in (*MATH_ITEMS.values(), *COMMONSENSE_ITEMS.values()) for q, _ in items]
  return tokenizer_lib.train_tokenizer(text * 20, 400, root / "tok.model")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("dataset")
  return _write_sets(root, {**MATH_ITEMS, **COMMONSENSE_ITEMS})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tok):
  from llama_jax import convert
  cfg = ModelConfig(vocab_size=tok.vocab_size, d_model=32, n_layers=1, n_heads=2, ffn_dim=64,
                    norm_eps=1e-5, max_position_embeddings=256, init_std=0.3)
  params = jax.tree.map(np.asarray, spec_lib.to_params(model_lib.init(cfg, seed=0)))
  path = tmp_path_factory.mktemp("ckpt") / "tiny"
  convert.save_converted(path, cfg, params)
  return path


# ------------------------------------------------------------------------------ pipeline
CANNED = {  # instruction -> what the "model" answers
    "What is 2 + 2?": "2 + 2 = 4. The answer is 4.",
    "What is 10 * 3?": "10 * 3 = 3,0 hmm, no: 31",  # wrong: 31 after removing commas
    "What is 7 - 9?": "7 - 9 = -2",
    "Pick the prime. Answer Choices: (A) 4 (B) 7": "the answer is (B)",
    "Pick the even. Answer Choices: (A) 4 (B) 7": "Because 4 is even: (A)",  # "B" of Because
    "Please answer with true or false: is fire hot?": "the correct answer is true",
    "Please answer with true or false: is ice hot?": "the correct answer is true",
    "Which is a mammal? Answer1: cat Answer2: trout": "the correct answer is answer1",
}


def _canned_decoder(evaluation, tok):
  """A stand-in for decoding: the canned answer of each prompt (then EOS), as token ids."""
  by_prompt = {tuple(tok.encode(instructions.eval_prompt(q), bos=True)): a
               for q, a in CANNED.items()}

  def decode(model, prompts):
    assert len(prompts) == evaluation.config["batch_size"]  # batches are filled to one shape
    return [tok.encode(by_prompt[tuple(p)], bos=False) + [tok.eos_id] for p in prompts]

  return decode


@pytest.mark.parametrize("task,want", [
    ("math", {"gsm8k": 2 / 3, "AQuA": 1 / 2}),
    ("commonsense", {"boolq": 1 / 2, "ARC-Easy": 1.0}),
])
def test_canned_answers_are_scored_through_the_pipeline(task, want, tok, data_dir,
                                                        monkeypatch):
  """Decoded prompt + answer -> response -> the task's rule -> per-dataset accuracy, average,
  and one record per item."""
  cls = evals.get(task)
  context = registry.Context(tokenizer=tok)
  evaluation = cls({"data_dir": str(data_dir), "datasets": tuple(want), "batch_size": 2},
                   context)
  monkeypatch.setattr(evaluation, "_decode", _canned_decoder(evaluation, tok))
  result = evaluation.run(model=None)
  assert result.metrics == pytest.approx({**want, "average": sum(want.values()) / len(want)})
  items = result.record["items"]
  assert len(items) == sum(len((MATH_ITEMS | COMMONSENSE_ITEMS)[d]) for d in want)
  texts = set(CANNED.values())
  assert all(item["response"] in texts for item in items)
  if task == "math":
    by_index = {(i["dataset"], i["index"]): i for i in items}
    assert by_index[("gsm8k", 1)]["prediction"] == 31.0
    assert by_index[("AQuA", 1)]["prediction"] == "B" and not by_index[("AQuA", 1)]["correct"]
  assert result.record["decoding"]["num_beams"] == 4
  table = cls.tables([dict(result.record, label="canned")])[f"{task}_table.md"]
  row = next(line for line in table.splitlines() if line.startswith("| canned"))
  assert row.split("|")[-2].strip() == f"{100 * result.metrics['average']:.1f}"


# ------------------------------------------------------------------------------ CLI
def test_command_line_writes_json_table_and_plot(checkpoint, tok, data_dir, tmp_path):
  from absl import flags
  out = tmp_path / "results"
  fv = flags.FlagValues()
  evaluate_lib.define_flags(fv)
  fv(["evaluate", "--task=math", f"--checkpoint={checkpoint}", f"--tokenizer={tok.path}",
      f"--data_dir={data_dir}", "--datasets=gsm8k,AQuA", "--num_beams=2", "--max_new_tokens=5",
      "--batch_size=2", "--label=tiny", f"--out={out}"])
  evaluate_lib.main(["evaluate"], fv)
  record = json.loads((out / "math_tiny.json").read_text())
  assert record["task"] == "math" and set(record["datasets"]) == {"gsm8k", "AQuA"}
  assert len(record["items"]) == 5 and all(i["new_tokens"] <= 5 for i in record["items"])
  assert record["options"]["num_beams"] == 2 and record["options"]["beam_convention"] == "legacy"
  table = (out / "math_table.md").read_text()
  assert "| run | gsm8k | AQuA | Avg |" in table and "| tiny |" in table
  assert (out / "math_accuracy.png").read_bytes()[:4] == b"\x89PNG"
  # Greedy decoding of the same prompts gives what the generation API gives.
  from llama_jax import convert
  from llama_jax.inference import generate
  model = convert.load_model(checkpoint)
  prompt = tok.encode(instructions.eval_prompt(MATH_ITEMS["gsm8k"][0][0]), bos=True)
  greedy = evals.get("math")({"data_dir": str(data_dir), "datasets": ("gsm8k",), "num_beams": 1,
                              "max_new_tokens": 5, "batch_size": 2},
                             registry.Context(tokenizer=tok))
  new = greedy.generations(model, greedy.items["gsm8k"][:1])[0]
  assert new == generate.generate(model, [prompt], 5, eos_id=tok.eos_id)[0]
  # Several runs -> one table with a row each (task=plot).
  (out / "math_other.json").write_text(json.dumps(dict(record, label="other")))
  made = evaluate_lib.run(evaluate_lib.Options(task="plot", out=str(tmp_path / "plots"),
                                               results=[str(out / "math_*.json")]))
  table = made["math_table.md"].read_text()
  assert "| tiny |" in table and "| other |" in table


def test_bad_test_files_fail_before_the_model_loads(checkpoint, tok, tmp_path):
  root = tmp_path / "dataset"
  (root / "gsm8k").mkdir(parents=True)
  good = {"instruction": "What is 1 + 1?", "input": "", "output": "", "answer": "2"}
  bad = {"instruction": "What is 2 + 2?", "input": "", "output": ""}
  (root / "gsm8k" / "test.json").write_text(json.dumps([good, good, bad], indent=4))
  out = tmp_path / "out"
  common = dict(checkpoint=str(checkpoint), tokenizer=str(tok.path), out=str(out),
                data_dir=str(root))
  with pytest.raises(DataError, match=r"gsm8k/test\.json:14: the record lacks the field\(s\) "
                                      r"\['answer'\]"):
    evaluate_lib.run(evaluate_lib.Options(task="math", datasets=["gsm8k"], **common))
  (root / "gsm8k" / "test.json").write_text(json.dumps([good, dict(good, answer="four")]))
  with pytest.raises(DataError, match=r"test\.json:1: answer 'four' is not a number"):
    evaluate_lib.run(evaluate_lib.Options(task="math", datasets=["gsm8k"], **common))
  with pytest.raises(DataError, match=r"AQuA/test\.json does not exist"):
    evaluate_lib.run(evaluate_lib.Options(task="math", datasets=["AQuA"], **common))
  assert not out.exists()  # nothing written
  with pytest.raises(ConfigError, match=r"unknown \['GSM8K'\]"):
    evaluate_lib.run(evaluate_lib.Options(task="math", datasets=["GSM8K"], **common))
  with pytest.raises(ConfigError, match="data_dir=''"):
    evaluate_lib.run(evaluate_lib.Options(task="commonsense", **dict(common, data_dir="")))
  with pytest.raises(ConfigError, match="beam_convention='hf4'"):
    evaluate_lib.run(evaluate_lib.Options(task="commonsense", beam_convention="hf4", **common))


# ------------------------------------------------------------------------------ training
def test_training_on_instructions_runs_the_math_evaluation(tok, data_dir, tmp_path):
  """data.format="instructions" and config.evals.math together in the trainer."""
  from llama_jax.training import defaults as base
  from llama_jax.training import loop
  from llama_jax.training import validation as config_lib
  records = [{"instruction": f"What is {i} + {i}?", "input": "",
              "output": f"{i} + {i} = {2 * i}. The answer is {2 * i}."} for i in range(24)]
  train_file = tmp_path / "train.json"
  train_file.write_text(json.dumps(records))
  c = base.get_config()
  c.model = base.model_fields("tiny", vocab_size=tok.vocab_size, d_model=32, n_layers=1,
                              n_heads=2, n_kv_heads=1, ffn_dim=64, max_position_embeddings=128)
  c.update(dict(seq_len=128, batch_size=8, steps=4, log_every=2, checkpoint_every=0,
                eval_every=2, eval_batches=1, sample_tokens=0))
  c.optim.update(dict(peak_lr=1e-2, warmup_steps=1))
  c.data.update(dict(format="instructions", tokenizer=str(tok.path), pack=True,
                     cache_dir=str(tmp_path / "cache")))
  c.data.instructions.update(dict(train_file=str(train_file), heldout_examples=4,
                                  cutoff_len=96, train_on_inputs=False))
  c.evals.math = dict(type="math", every=4, data_dir=str(data_dir), datasets=("gsm8k",),
                      num_beams=2, max_new_tokens=3, batch_size=4)
  c.mesh.update(dict(data=2, fsdp=4, tensor=1, sequence=1))
  result = loop.run(config_lib.lock(c), str(tmp_path / "run"))
  assert sorted(result.evals) == [2, 4]
  assert {"eval_loss", "math_gsm8k", "math_average"} <= set(result.evals[4])
  assert 0.0 <= result.evals[4]["math_average"] <= 1.0 and math.isfinite(result.losses[4])
