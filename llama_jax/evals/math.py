"""Math word problems (LLM-Adapters, Hu et al. 2023, Tables 1/3): accuracy per test set.

`python -m llama_jax.evaluate --task=math --data_dir=LLM-Adapters/dataset ...` or
`config.evals.math = dict(type="math", every=N, data_dir=...)`. Test sets: MultiArith, gsm8k,
AddSub, AQuA, SingleEq, SVAMP (the paper's six-dataset table, the default) and mawps (the
README's later table). Their evaluate.py decodes one question at a time with 4 beams and at
most 256 new tokens; the answer is the last number of the response (the first capital A-E for
AQuA), `answers.py` has the rules. The machinery is `tasks.py`.
"""
from __future__ import annotations

from llama_jax.core.errors import DataError
from llama_jax.evals import answers, registry, tasks

PAPER_DATASETS = ("MultiArith", "gsm8k", "AddSub", "AQuA", "SingleEq", "SVAMP")


@registry.register
class Math(tasks.TaskEvaluation):
  name = "math"
  description = "LLM-Adapters math accuracy (last number / AQuA letter), beam search"
  datasets_known = answers.MATH_DATASETS
  table_title = "math accuracy (%)"
  options = tasks.TaskEvaluation.task_options(PAPER_DATASETS, max_new_tokens=256)

  def check_label(self, dataset, item, path):
    if answers.is_choice_math(dataset):
      if item.answer not in ("A", "B", "C", "D", "E"):
        raise DataError(f"{path}:{item.line}: answer {item.answer!r} is not a letter A-E")
      return
    try:
      float(item.answer)
    except (TypeError, ValueError):
      raise DataError(f"{path}:{item.line}: answer {item.answer!r} is not a number") from None

  def score(self, dataset, text, label):
    return answers.score_math(dataset, text, label)
