"""The adapters miniature's data: arithmetic word problems, a pretraining corpus, a tokenizer.

Everything is generated here from a seed, with no download:

- `train.json`: word problems in LLM-Adapters' math_10k shape (`instruction`, `input` = "",
  `output` = a one-line rationale ending "The answer is N."), read by `data.format=
  "instructions"` unchanged;
- `test/AddSub/test.json` (one addition or subtraction) and `test/MultiArith/test.json` (an
  addition then a subtraction): LLM-Adapters' test-set shape (`instruction`, `input`, `output`,
  `answer`) under two of the math evaluator's dataset names, whose numeric rule (the last number
  of the response) scores them. They are synthetic sets in the style of those two, not them;
- `corpus/*.txt`: the pretraining text, with train numbers only — the same arithmetic told
  as past-tense stories ("Tom had 23 apples. He bought 45 more, so he had 23 + 45 = 68
  apples."), as problems with their solutions in plain text ("Question: ... Answer: ..."), the
  way word problems appear in web text, and as bare equations; never in the instruction
  template that fine-tuning teaches;
- `tokenizer.model`: a LLaMA-style BPE (digits split) trained on the corpus and the templated
  training examples, so the template's words are pieces, as they are in LLaMA's vocabulary.

Disjoint numbers: the operands 1..max_number are split once by a hash of the number (the fifth
with the smallest hashes are test numbers, the same split at every seed); training problems and
the corpus use train numbers only, test problems test numbers only (sums and differences can
coincide).

  python experiments/adapters/make_data.py --out=runs/adapters_miniature/data [--smoke]
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import sys
from pathlib import Path

NAMES = ("Tom", "Anna", "Liam", "Mia", "Noah", "Emma", "Ben", "Lucy", "Sam", "Zoe", "Max", "Ella")
PRONOUNS = {"Tom": "He", "Liam": "He", "Noah": "He", "Ben": "He", "Sam": "He", "Max": "He",
            "Anna": "She", "Mia": "She", "Emma": "She", "Lucy": "She", "Zoe": "She", "Ella": "She"}
ITEMS = ("apples", "marbles", "stickers", "books", "coins", "cookies", "pencils", "cards",
         "shells", "stamps")
GAIN = (("buys", "bought"), ("finds", "found"), ("gets", "got"), ("wins", "won"))
LOSS = (("gives away", "gave away"), ("loses", "lost"), ("sells", "sold"), ("eats", "ate"))
TEST_SETS = ("AddSub", "MultiArith")  # one step, two steps (the evaluator's names)


@dataclasses.dataclass(frozen=True)
class Scale:
  """Sizes of one generated data set."""
  train: int  # training problems
  test: int  # problems per test set
  corpus_docs: int  # pretraining text files
  lines_per_doc: int  # stories or equations per file
  max_number: int  # operands are 1..max_number
  vocab_size: int  # tokenizer vocabulary (a soft limit)


FULL = Scale(train=4000, test=200, corpus_docs=400, lines_per_doc=60, max_number=60,
             vocab_size=1024)
SMOKE = Scale(train=64, test=8, corpus_docs=20, lines_per_doc=20, max_number=60, vocab_size=512)


def _hash(n: int) -> int:
  return int(hashlib.sha256(str(n).encode()).hexdigest(), 16)


def number_sets(max_number: int) -> tuple[list[int], list[int]]:
  """(train, test) operands: the fifth of 1..max_number with the smallest hashes is for the
  tests, whatever the seed."""
  numbers = sorted(range(1, max_number + 1), key=_hash)
  test = set(numbers[:max_number // 5])
  return ([n for n in range(1, max_number + 1) if n not in test], sorted(test))


# ------------------------------------------------------------------------------ problems
def _pair(rng: random.Random, numbers: list[int], op: str) -> tuple[int, int]:
  a, b = rng.choice(numbers), rng.choice(numbers)
  if op == "-" and a <= b:  # a subtraction leaves something: a > b (two different numbers)
    a, b = (b, a) if a != b else (a, b)
    if a == b:
      return _pair(rng, numbers, op)
  return a, b


def one_step(rng: random.Random, numbers: list[int]) -> dict:
  """An AddSub-style problem: one addition or one subtraction."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  op = rng.choice("+-")
  a, b = _pair(rng, numbers, op)
  if op == "+":
    verb = rng.choice(GAIN)[0]
    q = (f"{name} has {a} {item}. {PRONOUNS[name]} {verb} {b} more {item}. "
         f"How many {item} does {name} have now?")
    answer = a + b
  else:
    verb = rng.choice(LOSS)[0]
    q = (f"{name} has {a} {item}. {PRONOUNS[name]} {verb} {b} of them. "
         f"How many {item} does {name} have left?")
    answer = a - b
  output = f"{name} has {a} {op} {b} = {answer} {item}. The answer is {answer}."
  return {"instruction": q, "input": "", "output": output, "answer": str(answer)}


def two_steps(rng: random.Random, numbers: list[int]) -> dict:
  """A MultiArith-style problem: an addition, then a subtraction from the sum."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  a, b = rng.choice(numbers), rng.choice(numbers)
  total = a + b
  c = rng.choice([n for n in numbers if n < total])
  gain, loss = rng.choice(GAIN)[0], rng.choice(LOSS)[0]
  q = (f"{name} has {a} {item}. {PRONOUNS[name]} {gain} {b} more {item} and then {loss} {c} of "
       f"them. How many {item} does {name} have now?")
  answer = total - c
  output = (f"{name} has {a} + {b} = {total} {item}, then {total} - {c} = {answer} {item}. "
            f"The answer is {answer}.")
  return {"instruction": q, "input": "", "output": output, "answer": str(answer)}


def problems(rng: random.Random, numbers: list[int], count: int, kinds) -> list[dict]:
  return [kinds[i % len(kinds)](rng, numbers) for i in range(count)]


# ------------------------------------------------------------------------------ corpus
def story(rng: random.Random, numbers: list[int]) -> str:
  """The arithmetic of a problem told as a past-tense story."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  pron = PRONOUNS[name]
  a, b = rng.choice(numbers), rng.choice(numbers)
  kind = rng.randrange(3)
  if kind == 0 or a == b:
    return (f"{name} had {a} {item}. {pron} {rng.choice(GAIN)[1]} {b} more, so {pron.lower()} "
            f"had {a} + {b} = {a + b} {item}.")
  if kind == 1:
    a, b = max(a, b), min(a, b)
    return (f"{name} had {a} {item}. {pron} {rng.choice(LOSS)[1]} {b} of them, so "
            f"{pron.lower()} had {a} - {b} = {a - b} {item} left.")
  c = rng.choice([n for n in numbers if n < a + b])
  return (f"{name} had {a} {item} and {rng.choice(GAIN)[1]} {b} more: {a} + {b} = {a + b}. "
          f"Then {pron.lower()} {rng.choice(LOSS)[1]} {c}: {a + b} - {c} = {a + b - c}.")


def question(rng: random.Random, numbers: list[int]) -> str:
  """A problem and its solution as plain text (the web's "Question: ... Answer: ..."), not in
  the instruction template."""
  p = rng.choice((one_step, two_steps))(rng, numbers)
  return f"Question: {p['instruction']} Answer: {p['output']}"


def equations(rng: random.Random, numbers: list[int]) -> str:
  parts = []
  for _ in range(3):
    a, b = rng.choice(numbers), rng.choice(numbers)
    parts.append(f"{a} + {b} = {a + b}." if rng.random() < 0.5 else
                 f"{max(a, b)} - {min(a, b)} = {max(a, b) - min(a, b)}.")
  return " ".join(parts)


def line(rng: random.Random, numbers: list[int]) -> str:
  """One corpus line: a story (1/4), a question with its answer (1/4), equations (1/2)."""
  r = rng.random()
  return (story if r < 0.25 else question if r < 0.5 else equations)(rng, numbers)


def corpus(rng: random.Random, numbers: list[int], scale: Scale) -> list[str]:
  return ["\n".join(line(rng, numbers) for _ in range(scale.lines_per_doc)) + "\n"
          for _ in range(scale.corpus_docs)]


# ------------------------------------------------------------------------------ writing
def _write_json(path: Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(data, indent=1) + "\n")
  os.replace(tmp, path)


def write(out: str | os.PathLike, scale: Scale = FULL, seed: int = 0) -> dict:
  """Writes the data set into `out` (see the module docstring); returns its manifest.

  An `out` whose manifest matches (scale and seed) is reused as it is.
  """
  from llama_jax.data import instructions
  from llama_jax.data.tokenizer import train_tokenizer
  out = Path(out)
  manifest_path = out / "manifest.json"
  want = {"scale": dataclasses.asdict(scale), "seed": seed}
  if manifest_path.is_file():
    manifest = json.loads(manifest_path.read_text())
    if {k: manifest.get(k) for k in want} == want:
      return manifest
  train_numbers, test_numbers = number_sets(scale.max_number)
  assert not set(train_numbers) & set(test_numbers)
  rng = random.Random(seed)
  train = problems(rng, train_numbers, scale.train, (one_step, two_steps))
  _write_json(out / "train.json", [{k: p[k] for k in ("instruction", "input", "output")}
                                   for p in train])
  for name, kind in zip(TEST_SETS, (one_step, two_steps)):
    _write_json(out / "test" / name / "test.json", problems(rng, test_numbers, scale.test,
                                                            (kind,)))
  docs = corpus(rng, train_numbers, scale)
  (out / "corpus").mkdir(parents=True, exist_ok=True)
  for i, text in enumerate(docs):
    (out / "corpus" / f"doc_{i:04d}.txt").write_text(text)
  texts = docs + [instructions.full_text(p) for p in train]
  rng.shuffle(texts)
  tok = train_tokenizer(texts, scale.vocab_size, out / "tokenizer.model")
  manifest = {**want, "train_numbers": train_numbers, "test_numbers": test_numbers,
              "train_examples": len(train), "test_sets": dict.fromkeys(TEST_SETS, scale.test),
              "corpus_files": len(docs), "tokenizer_vocab_size": tok.vocab_size}
  _write_json(manifest_path, manifest)
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory to write the data set into")
  parser.add_argument("--smoke", action="store_true", help="a few examples, for tests")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)
  manifest = write(args.out, SMOKE if args.smoke else FULL, args.seed)
  print(json.dumps({k: v for k, v in manifest.items() if "numbers" not in k}, indent=1))


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
  main()
