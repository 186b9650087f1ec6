"""The adapters miniature's data: arithmetic word problems, a pretraining corpus, a tokenizer.

Everything is generated here from a seed, with no download:

- `train.json`: word problems in LLM-Adapters' math_10k shape (`instruction`, `input` = "",
  `output` = a one-line rationale ending "The answer is N."), read by `data.format=
  "instructions"` unchanged;
- `test/AddSub/test.json` (one addition or subtraction) and `test/MultiArith/test.json` (an
  addition then a subtraction): LLM-Adapters' test-set shape (`instruction`, `input`, `output`,
  `answer`) under two of the math evaluator's dataset names, whose numeric rule (the last number
  of the response) scores them. They are synthetic sets in the style of those two, not them;
- `corpus/*.txt`: the pretraining text — additions and subtractions over all of 1..max_number
  told as past-tense stories ("Tom had 13 apples. He bought 5 more, so he had 13 + 5 = 18
  apples.") and as bare equations, plus questions in LLM-Adapters' instruction template whose
  answer is a number copied from the question, never computed ("Mia has 4 coins and 17 shells.
  How many shells does Mia have?" -> "Mia has 17 shells. The answer is 17."). Like LLaMA's
  pretraining, it is where the arithmetic, the template's words and the habit of answering
  with a number from the question come from; fine-tuning teaches that the task's questions
  want the arithmetic;
- `tokenizer.model`: a LLaMA-style BPE (digits split) trained on the corpus and the templated
  training examples, so the template's words are pieces, as they are in LLaMA's vocabulary.

The fine-tuning and test problems never share their arithmetic, by one of two rules (`split`):

- "pairs" (the default): every addition or subtraction (x, y) is classed by a hash of the
  unordered pair (one pair in five is a test pair, the same at every seed). Training problems
  use train pairs only; every step of a test problem is a test pair. Every number also appears
  in training; no test computation does.
- "numbers": the operands 1..max_number are split (the fifth with the smallest hashes are test
  numbers); training problems use train numbers only, test problems test numbers only.

The pretraining corpus covers all of the arithmetic (and no arithmetic question): a test
problem asks for a computation the base met in pretraining and fine-tuning never showed, so
the test measures how well each method carries the base's knowledge into the task.

  python experiments/adapters/make_data.py --out=runs/adapters_miniature/data [--smoke] \
      [--split=pairs|numbers]
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
SPLITS = ("pairs", "numbers")


@dataclasses.dataclass(frozen=True)
class Scale:
  """Sizes of one generated data set."""
  train: int  # training problems
  test: int  # problems per test set
  corpus_docs: int  # pretraining text files
  lines_per_doc: int  # stories or equations per file
  max_number: int  # operands are 1..max_number
  vocab_size: int  # tokenizer vocabulary (a soft limit)


FULL = Scale(train=4000, test=200, corpus_docs=400, lines_per_doc=60, max_number=20,
             vocab_size=1024)
SMOKE = Scale(train=64, test=8, corpus_docs=20, lines_per_doc=20, max_number=20, vocab_size=512)


def _hash(key: str) -> int:
  return int(hashlib.sha256(key.encode()).hexdigest(), 16)


def test_numbers(max_number: int) -> list[int]:
  """The "numbers" split's test operands: the fifth of 1..max_number with the smallest hashes."""
  return sorted(sorted(range(1, max_number + 1), key=lambda n: _hash(str(n)))[:max_number // 5])


def is_test_pair(x: int, y: int) -> bool:
  """The "pairs" split: about one unordered pair (x, y) in five is for the tests."""
  return _hash(f"{min(x, y)},{max(x, y)}") % 5 == 0


@dataclasses.dataclass(frozen=True)
class Side:
  """Which arithmetic one side may use under a split: train (test=False), test (True) or any
  (None: the pretraining corpus)."""
  split: str
  test: bool | None
  max_number: int

  def accepts(self, operands: list[int], pairs: list[tuple[int, int]]) -> bool:
    if self.test is None:
      return True
    if self.split == "numbers":
      held = set(test_numbers(self.max_number))
      return all((n in held) == self.test for n in operands)
    return all(is_test_pair(x, y) == self.test for x, y in pairs)

  def draw(self, rng: random.Random, make):
    """`make(rng, max_number) -> (value, operands, pairs)` drawn until this side accepts it."""
    while True:
      value, operands, pairs = make(rng, self.max_number)
      if self.accepts(operands, pairs):
        return value


# ------------------------------------------------------------------------------ problems
def _one_step(rng: random.Random, top: int):
  """An AddSub-style problem: one addition or one subtraction."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  a, b = rng.randint(1, top), rng.randint(1, top)
  if rng.random() < 0.5:
    verb = rng.choice(GAIN)[0]
    q = (f"{name} has {a} {item}. {PRONOUNS[name]} {verb} {b} more {item}. "
         f"How many {item} does {name} have now?")
    op, answer = "+", a + b
  else:
    a, b = max(a, b) + (a == b), min(a, b)  # something is left
    verb = rng.choice(LOSS)[0]
    q = (f"{name} has {a} {item}. {PRONOUNS[name]} {verb} {b} of them. "
         f"How many {item} does {name} have left?")
    op, answer = "-", a - b
  output = f"{name} has {a} {op} {b} = {answer} {item}. The answer is {answer}."
  return ({"instruction": q, "input": "", "output": output, "answer": str(answer)}, [a, b],
          [(a, b)])


def _two_steps(rng: random.Random, top: int):
  """A MultiArith-style problem: an addition, then a subtraction from the sum."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  a, b = rng.randint(1, top), rng.randint(1, top)
  total = a + b
  c = rng.randint(1, min(top, total - 1))
  gain, loss = rng.choice(GAIN)[0], rng.choice(LOSS)[0]
  q = (f"{name} has {a} {item}. {PRONOUNS[name]} {gain} {b} more {item} and then {loss} {c} of "
       f"them. How many {item} does {name} have now?")
  answer = total - c
  output = (f"{name} has {a} + {b} = {total} {item}, then {total} - {c} = {answer} {item}. "
            f"The answer is {answer}.")
  return ({"instruction": q, "input": "", "output": output, "answer": str(answer)}, [a, b, c],
          [(a, b), (total, c)])


def problems(rng: random.Random, side: Side, count: int, kinds) -> list[dict]:
  return [side.draw(rng, kinds[i % len(kinds)]) for i in range(count)]


# ------------------------------------------------------------------------------ corpus
def _story(rng: random.Random, top: int):
  """The arithmetic of a problem told as a past-tense story."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  pron = PRONOUNS[name]
  a, b = rng.randint(1, top), rng.randint(1, top)
  kind = rng.randrange(3)
  if kind == 0:
    return (f"{name} had {a} {item}. {pron} {rng.choice(GAIN)[1]} {b} more, so {pron.lower()} "
            f"had {a} + {b} = {a + b} {item}."), [a, b], [(a, b)]
  if kind == 1:
    a, b = max(a, b) + (a == b), min(a, b)
    return (f"{name} had {a} {item}. {pron} {rng.choice(LOSS)[1]} {b} of them, so "
            f"{pron.lower()} had {a} - {b} = {a - b} {item} left."), [a, b], [(a, b)]
  c = rng.randint(1, min(top, a + b - 1))
  return (f"{name} had {a} {item} and {rng.choice(GAIN)[1]} {b} more: {a} + {b} = {a + b}. "
          f"Then {pron.lower()} {rng.choice(LOSS)[1]} {c}: {a + b} - {c} = {a + b - c}."
          ), [a, b, c], [(a, b), (a + b, c)]


def _lookup(rng: random.Random, top: int):
  """A question in the instruction template whose answer is copied, not computed: how many of
  one kind of item someone has, or had before a change. It gives the corpus the template's
  words and the answer phrase, and practice in carrying a number from the question into the
  response; fine-tuning is left to teach that the task's questions want a computation."""
  name, item = rng.choice(NAMES), rng.choice(ITEMS)
  pron = PRONOUNS[name]
  a, b = rng.randint(1, top), rng.randint(1, top)
  kind = rng.randrange(3)
  if kind == 0:
    other = rng.choice([i for i in ITEMS if i != item])
    q = f"{name} has {a} {other} and {b} {item}. How many {item} does {name} have?"
    answer, out = b, f"{name} has {b} {item}."
  elif kind == 1:
    q = (f"{name} has {a} {item}. {pron} {rng.choice(GAIN)[0]} {b} more {item}. "
         f"How many {item} did {name} have at first?")
    answer, out = a, f"{name} had {a} {item} at first."
  else:
    q = (f"{name} has {a} {item}. {pron} {rng.choice(LOSS)[0]} {b} of them. "
         f"How many {item} did {name} have at first?")
    answer, out = a, f"{name} had {a} {item} at first."
  from llama_jax.data import instructions
  return instructions.train_prompt(q, "", f"{out} The answer is {answer}."), [a, b], []


def _equation(rng: random.Random, top: int):
  a, b = rng.randint(1, top), rng.randint(1, top)
  if rng.random() < 0.5:
    return f"{a} + {b} = {a + b}.", [a, b], [(a, b)]
  a, b = max(a, b), min(a, b)
  return f"{a} - {b} = {a - b}.", [a, b], [(a, b)]


def line(rng: random.Random, side: Side) -> str:
  """One corpus entry: a story (2/5), three equations (3/10) or a templated lookup (3/10)."""
  u = rng.random()
  if u < 0.4:
    return side.draw(rng, _story)
  if u < 0.7:
    return " ".join(side.draw(rng, _equation) for _ in range(3))
  return side.draw(rng, _lookup)


def corpus(rng: random.Random, side: Side, scale: Scale) -> list[str]:
  return ["\n".join(line(rng, side) for _ in range(scale.lines_per_doc)) + "\n"
          for _ in range(scale.corpus_docs)]


# ------------------------------------------------------------------------------ writing
def _write_json(path: Path, data) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(data, indent=1) + "\n")
  os.replace(tmp, path)


def write(out: str | os.PathLike, scale: Scale = FULL, seed: int = 0, split: str = "pairs"
          ) -> dict:
  """Writes the data set into `out` (see the module docstring); returns its manifest.

  An `out` whose manifest matches (scale, seed and split) is reused as it is.
  """
  if split not in SPLITS:
    raise ValueError(f"split={split!r}; allowed: {list(SPLITS)}")
  from llama_jax.data import instructions
  from llama_jax.data.tokenizer import train_tokenizer
  out = Path(out)
  manifest_path = out / "manifest.json"
  want = {"scale": dataclasses.asdict(scale), "seed": seed, "split": split}
  if manifest_path.is_file():
    manifest = json.loads(manifest_path.read_text())
    if {k: manifest.get(k) for k in want} == want:
      return manifest
  train_side, test_side = Side(split, False, scale.max_number), Side(split, True, scale.max_number)
  rng = random.Random(seed)
  train = problems(rng, train_side, scale.train, (_one_step, _two_steps))
  _write_json(out / "train.json", [{k: p[k] for k in ("instruction", "input", "output")}
                                   for p in train])
  for name, kind in zip(TEST_SETS, (_one_step, _two_steps)):
    _write_json(out / "test" / name / "test.json", problems(rng, test_side, scale.test, (kind,)))
  docs = corpus(rng, Side(split, None, scale.max_number), scale)
  (out / "corpus").mkdir(parents=True, exist_ok=True)
  for i, text in enumerate(docs):
    (out / "corpus" / f"doc_{i:04d}.txt").write_text(text)
  texts = docs + [instructions.full_text(p) for p in train]
  rng.shuffle(texts)
  tok = train_tokenizer(texts, scale.vocab_size, out / "tokenizer.model")
  manifest = {**want, **({"test_numbers": test_numbers(scale.max_number)}
                         if split == "numbers" else {}),
              "train_examples": len(train), "test_sets": dict.fromkeys(TEST_SETS, scale.test),
              "corpus_files": len(docs), "tokenizer_vocab_size": tok.vocab_size}
  _write_json(manifest_path, manifest)
  return manifest


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", required=True, help="directory to write the data set into")
  parser.add_argument("--smoke", action="store_true", help="a few examples, for tests")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--split", choices=SPLITS, default="pairs",
                      help="what train and test never share: operand pairs or numbers")
  args = parser.parse_args(argv)
  manifest = write(args.out, SMOKE if args.smoke else FULL, args.seed, args.split)
  print(json.dumps({k: v for k, v in manifest.items() if "numbers" not in k}, indent=1))


if __name__ == "__main__":
  sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
  main()
