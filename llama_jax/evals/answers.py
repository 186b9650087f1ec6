"""Answer extraction and scoring of LLM-Adapters' math and commonsense evaluations.

The model's text is the decoded prompt + generation split on "### Response:", part [1],
stripped (`response`): the prompt holds the marker once, so this is the generation up to any
later "### Response:" it writes itself. Then, as their `evaluate.py` and
`commonsense_evaluate.py` score it:

- numeric math sets (MultiArith, GSM8K, AddSub, SingleEq, SVAMP, MAWPS): commas are removed,
  every match of `-?\\d+\\.?\\d*` is found, the LAST one read as a float is the prediction (no
  match: +inf, never correct); correct iff |label - prediction| <= 0.001. "1,234.5" -> 1234.5,
  "-3" -> -3, "3." -> 3, "1.5.2" -> 2 (the matches are "1.5" and "2").
- AQuA: the FIRST match of `A|B|C|D|E` anywhere in the text (so a capital A-E in prose, like
  the "A" of "A train ...", counts); no match: ""; correct iff equal to the label letter.
- commonsense: the FIRST match of the task's vocabulary — boolq `true|false` (lowercase),
  piqa `solution1|solution2`, social_i_qa / ARC-Challenge / ARC-Easy / openbookqa
  `answer1..answer5`, hellaswag `ending1..ending4`, winogrande `option1|option2`; no match: "";
  correct iff equal to the label string.

Their math script decodes with the special tokens kept ("<s>", "</s>" in the text) and the
commonsense one without; neither marker holds a digit or a capital A-E, so decoding without them
extracts the same answers.
"""
from __future__ import annotations

import math
import re

RESPONSE_MARKER = "### Response:"
MISS = 0.001  # tolerance of a numeric answer

NUMERIC_MATH = ("MultiArith", "gsm8k", "AddSub", "SingleEq", "SVAMP", "mawps")
CHOICE_MATH = ("AQuA",)
MATH_DATASETS = NUMERIC_MATH + CHOICE_MATH
COMMONSENSE_PATTERNS = {
    "boolq": r"true|false",
    "piqa": r"solution1|solution2",
    "social_i_qa": r"answer1|answer2|answer3|answer4|answer5",
    "hellaswag": r"ending1|ending2|ending3|ending4",
    "winogrande": r"option1|option2",
    "ARC-Challenge": r"answer1|answer2|answer3|answer4|answer5",
    "ARC-Easy": r"answer1|answer2|answer3|answer4|answer5",
    "openbookqa": r"answer1|answer2|answer3|answer4|answer5",
}
COMMONSENSE_DATASETS = tuple(COMMONSENSE_PATTERNS)
_NUMBER = re.compile(r"-?\d+\.?\d*")
_LETTER = re.compile(r"A|B|C|D|E")


def response(decoded: str) -> str:
  """The generated answer inside the decoded prompt + generation (part [1] of the split)."""
  parts = decoded.split(RESPONSE_MARKER)
  return parts[1].strip() if len(parts) > 1 else decoded.strip()


def extract_number(text: str) -> float:
  """The last number of the text, commas removed; +inf when there is none."""
  found = _NUMBER.findall(text.replace(",", ""))
  if not found:
    return math.inf
  try:
    return float(found[-1])
  except ValueError:
    return math.inf


def extract_letter(text: str) -> str:
  """The first capital A-E of the text (AQuA's options); "" when there is none."""
  found = _LETTER.findall(text.strip())
  return found[0] if found else ""


def extract_commonsense(dataset: str, text: str) -> str:
  """The first word of the dataset's answer vocabulary in the text; "" when there is none."""
  found = re.findall(COMMONSENSE_PATTERNS[dataset], text.strip())
  return found[0] if found else ""


def is_choice_math(dataset: str) -> bool:
  return dataset.lower() == "aqua"


def score_math(dataset: str, text: str, label) -> tuple[str | float, bool]:
  """(prediction, correct) of a math answer."""
  if is_choice_math(dataset):
    prediction = extract_letter(text)
    return prediction, prediction == label
  prediction = extract_number(text)
  return prediction, abs(float(label) - prediction) <= MISS


def score_commonsense(dataset: str, text: str, label) -> tuple[str, bool]:
  """(prediction, correct) of a commonsense answer."""
  prediction = extract_commonsense(dataset, text)
  return prediction, prediction == label
