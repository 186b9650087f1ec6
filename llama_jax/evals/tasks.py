"""Instruction-following task accuracy: LLM-Adapters' test sets, prompts, decoding and scoring.

The shared machinery of `math.py` and `commonsense.py` (each a registered evaluation that
says which datasets it knows and how an answer is scored):

- test sets are `<data_dir>/<dataset>/test.json` (LLM-Adapters' `dataset/` folder): a JSON array
  (or JSON lines) of records with `instruction` and `answer` (and `input`, empty in all of
  theirs); a missing field or broken JSON is a DataError naming the file and the line, raised
  when the evaluation is prepared, before the model is loaded;
- each prompt is `instructions.eval_prompt(instruction, input)` tokenized with BOS, no cut;
- decoding: `num_beams` = 1 is greedy (as HF's `generate` then does), more is beam search
  (`inference/beam_search.py`, HF's algorithm; their scripts use 4 beams and the "legacy"
  convention of the transformers they ran). Both stop a prompt at EOS or after
  `max_new_tokens` (their 256 for math, 32 for commonsense). Prompts are decoded in batches
  (sorted by length, the last batch filled with copies), which changes no result: every row's
  positions and scores are its own;
- the answer is the response part of the decoded prompt + generation (`answers.response`),
  scored by the evaluation's rule; accuracy = correct / total per dataset, and their average
  (the "Avg" column of the paper's tables).

`Result.metrics` holds `<dataset>` accuracies and `average`; the record holds per-dataset counts
and every item's response, prediction and label. `tables` renders records as the paper's
table (one row per run), `figures` as grouped bars.
"""
from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, ClassVar

from llama_jax.core.errors import ConfigError, DataError
from llama_jax.data import instructions
from llama_jax.data.instruction_files import read_examples
from llama_jax.evals import answers, plots, registry
from llama_jax.evals.registry import Option

TEST_FIELDS = {"instruction": (str,), "answer": (str, int, float)}


@dataclasses.dataclass(frozen=True)
class Item:
  dataset: str
  index: int  # record index in the test file
  line: int  # where the record starts in the file
  prompt: list[int]  # BOS + the evaluation prompt's tokens
  answer: Any


def load_items(data_dir: str, dataset: str, tokenizer, max_examples: int = 0) -> list[Item]:
  """The first `max_examples` (0 = all) items of `<data_dir>/<dataset>/test.json`, tokenized."""
  path = os.path.join(os.path.expanduser(data_dir), dataset, "test.json")
  if not os.path.isfile(path):
    raise DataError(f"{path} does not exist; data_dir={data_dir!r} must hold <dataset>/test.json "
                    "for every dataset (LLM-Adapters' dataset/ folder)")
  f = read_examples(path, TEST_FIELDS)
  n = min(len(f), max_examples) if max_examples else len(f)
  texts = []
  for record, line in zip(f.records[:n], f.lines[:n]):
    given = record.get("input") or ""
    if not isinstance(given, str):
      raise DataError(f"{path}:{line}: field 'input' is {given!r}; allowed: a string")
    texts.append(instructions.eval_prompt(record["instruction"], given))
  prompts = tokenizer.encode_batch(texts, bos=True, eos=False)
  return [Item(dataset, i, line, prompt, record["answer"])
          for i, (record, line, prompt) in enumerate(zip(f.records, f.lines, prompts))]


class TaskEvaluation(registry.Evaluation):
  """Base of the instruction-task evaluations: subclasses set `name`, `datasets_known`,
  `options` (from `task_options`) and `score`."""
  datasets_known: ClassVar[tuple[str, ...]] = ()
  table_title: ClassVar[str] = ""

  @staticmethod
  def task_options(datasets: tuple[str, ...], max_new_tokens: int) -> dict[str, Option]:
    return {
        "data_dir": Option("", "folder holding <dataset>/test.json (LLM-Adapters' dataset/)"),
        "datasets": Option(datasets, "test sets to evaluate", str),
        "num_beams": Option(4, "beams (1 = greedy decoding)"),
        "max_new_tokens": Option(max_new_tokens, "generated tokens per answer at most"),
        "max_examples": Option(0, "first N items of each test set (0 = all)"),
        "batch_size": Option(8, "prompts per decoding call"),
        "pad_multiple": Option(64, "pad prompts to a multiple of this (shared compilations)"),
        "beam_convention": Option("legacy", "HF beam search of transformers <= 4.3x (legacy, "
                                  "LLM-Adapters' runs) or 5 (current)"),
        "length_penalty": Option(1.0, "beam search length penalty (HF's default 1.0)"),
    }

  @classmethod
  def check(cls, c):
    if not c["data_dir"]:
      raise ConfigError(f"{cls.name} data_dir='' : give the folder holding <dataset>/test.json "
                        "(LLM-Adapters' dataset/ folder)")
    unknown = [d for d in c["datasets"] if d not in cls.datasets_known]
    if not c["datasets"] or unknown:
      raise ConfigError(f"{cls.name} datasets={list(c['datasets'])}: unknown {unknown}; allowed "
                        f"{list(cls.datasets_known)}")
    for name in ("num_beams", "max_new_tokens", "batch_size", "pad_multiple"):
      if c[name] < 1:
        raise ConfigError(f"{cls.name} {name}={c[name]} must be >= 1")
    if c["max_examples"] < 0:
      raise ConfigError(f"{cls.name} max_examples={c['max_examples']} must be >= 0 (0 = all)")
    from llama_jax.inference.beam_search import CONVENTIONS
    if c["beam_convention"] not in CONVENTIONS:
      raise ConfigError(f"{cls.name} beam_convention={c['beam_convention']!r}; allowed "
                        f"{list(CONVENTIONS)}")
    if not math.isfinite(c["length_penalty"]):
      raise ConfigError(f"{cls.name} length_penalty={c['length_penalty']} must be finite")

  def __init__(self, options, context):
    super().__init__(options, context)
    c = self.config
    self.items = {d: load_items(c["data_dir"], d, context.tokenizer, c["max_examples"])
                  for d in c["datasets"]}
    for d, items in self.items.items():
      for item in items:
        self.check_label(d, item, os.path.join(c["data_dir"], d, "test.json"))

  def check_label(self, dataset: str, item: Item, path: str) -> None:
    """Raises DataError for a label the scoring rule cannot compare (default: none)."""

  def score(self, dataset: str, text: str, label) -> tuple[Any, bool]:
    raise NotImplementedError

  # ------------------------------------------------------------------------------ decoding
  def _decode(self, model, prompts: list[list[int]]) -> list[list[int]]:
    from llama_jax.inference import beam_search, generate
    c, eos = self.config, self.context.tokenizer.eos_id
    if c["num_beams"] == 1:
      return generate.generate(model, prompts, c["max_new_tokens"], eos_id=eos,
                               pad_multiple=c["pad_multiple"])
    return beam_search.beam_search(
        model, prompts, c["max_new_tokens"], num_beams=c["num_beams"], eos_id=eos,
        length_penalty=c["length_penalty"], convention=c["beam_convention"],
        pad_multiple=c["pad_multiple"]).tokens

  def generations(self, model, items: list[Item]) -> list[list[int]]:
    """New tokens per item, decoded in batches of similar prompt lengths."""
    b = self.config["batch_size"]
    order = sorted(range(len(items)), key=lambda i: len(items[i].prompt))
    out: list[list[int]] = [[] for _ in items]
    for start in range(0, len(order), b):
      chunk = order[start:start + b]
      prompts = [items[i].prompt for i in chunk]
      prompts += [prompts[-1]] * (b - len(prompts))  # one shape for every batch
      for i, new in zip(chunk, self._decode(model, prompts)):
        out[i] = new
    return out

  def run(self, model) -> registry.Result:
    tok = self.context.tokenizer
    per_dataset, records = {}, []
    for dataset, items in self.items.items():
      start = time.time()
      correct = 0
      for item, new in zip(items, self.generations(model, items)):
        ids = [t for t in item.prompt + new if t != tok.eos_id and 0 <= t < tok.vocab_size]
        text = answers.response(tok.decode(ids))
        prediction, ok = self.score(dataset, text, item.answer)
        correct += ok
        records.append({"dataset": dataset, "index": item.index, "response": text,
                        "prediction": _jsonable(prediction), "answer": item.answer,
                        "correct": bool(ok), "new_tokens": len(new)})
      total = len(items)
      per_dataset[dataset] = {"accuracy": correct / total, "correct": correct, "total": total}
      self.context.log(f"{self.name} {dataset}: {correct}/{total} = {correct / total:.1%} "
                       f"({time.time() - start:.0f}s)")
    average = sum(d["accuracy"] for d in per_dataset.values()) / len(per_dataset)
    metrics = {d: v["accuracy"] for d, v in per_dataset.items()}
    metrics["average"] = average
    c = self.config
    record = {"datasets": per_dataset, "average": average,
              "decoding": {"num_beams": c["num_beams"], "max_new_tokens": c["max_new_tokens"],
                           "beam_convention": c["beam_convention"],
                           "length_penalty": c["length_penalty"]},
              "items": records}
    return registry.Result(metrics, record)

  # ------------------------------------------------------------------------------ reports
  @classmethod
  def tables(cls, records: list[dict]) -> dict[str, str]:
    return {f"{cls.name}_table.md": accuracy_table(records, cls.table_title or cls.name)}

  @classmethod
  def figures(cls, records):
    return {f"{cls.name}_accuracy.png": plots.task_accuracy_figure(
        records, f"{cls.table_title or cls.name} accuracy")}


def _jsonable(prediction):
  if isinstance(prediction, float) and not math.isfinite(prediction):
    return str(prediction)  # JSON has no inf
  return prediction


def accuracy_table(records: list[dict], title: str = "") -> str:
  """Markdown: one row per record (its label), one column per dataset, then the average (%)."""
  datasets: list[str] = []
  for r in records:
    datasets += [d for d in r["datasets"] if d not in datasets]
  lines = [f"### {title}", ""] if title else []
  lines.append("| run | " + " | ".join(datasets) + " | Avg |")
  lines.append("|---" * (len(datasets) + 2) + "|")
  for r in records:
    cells = [f"{100 * r['datasets'][d]['accuracy']:.1f}" if d in r["datasets"] else "-"
             for d in datasets]
    lines.append(f"| {r.get('label', 'run')} | " + " | ".join(cells) +
                 f" | {100 * r['average']:.1f} |")
  return "\n".join(lines) + "\n"
