"""Commonsense reasoning (LLM-Adapters, Hu et al. 2023, Table 4): accuracy per test set.

`python -m llama_jax.evaluate --task=commonsense --data_dir=LLM-Adapters/dataset ...` or
`config.evals.commonsense = dict(type="commonsense", every=N, data_dir=...)`. Test sets: boolq,
piqa, social_i_qa, hellaswag, winogrande, ARC-Challenge, ARC-Easy, openbookqa (their folder
names). Their commonsense_evaluate.py decodes with 4 beams and at most 32 new tokens; the
prediction is the first word of the task's answer vocabulary in the response and must equal the
label (`answers.py`). The machinery is `tasks.py`.
"""
from __future__ import annotations

from llama_jax.core.errors import DataError
from llama_jax.evals import answers, registry, tasks

PAPER_DATASETS = ("boolq", "piqa", "social_i_qa", "hellaswag", "winogrande", "ARC-Easy",
                  "ARC-Challenge", "openbookqa")


@registry.register
class Commonsense(tasks.TaskEvaluation):
  name = "commonsense"
  description = "LLM-Adapters commonsense accuracy (first answer word), beam search"
  datasets_known = answers.COMMONSENSE_DATASETS
  table_title = "commonsense accuracy (%)"
  options = tasks.TaskEvaluation.task_options(PAPER_DATASETS, max_new_tokens=32)

  def check_label(self, dataset, item, path):
    if not isinstance(item.answer, str):
      raise DataError(f"{path}:{item.line}: answer {item.answer!r} is not a string like "
                      "'answer1' or 'true'")

  def score(self, dataset, text, label):
    return answers.score_commonsense(dataset, text, label)
