"""Instruction data (`data.format = "instructions"`): LLM-Adapters' templates and tokenization.

Selected by `config.data.format = "instructions"`; its settings live under
`config.data.instructions` (train_file, eval_file, heldout_examples, split_seed, cutoff_len,
train_on_inputs), the general `data.tokenizer`, `pack`, `add_bos`, `add_eos`, `shuffle`,
`num_workers`, `max_documents` (a cap on examples) and `cache_dir` apply too.

Templates, byte for byte as LLM-Adapters' scripts build them (their source's indentation leaks
into the strings: `S` is 16 spaces). Training (`finetune.py`) and evaluation (`evaluate.py`,
`commonsense_evaluate.py`) differ in whitespace only:

- train, no input: "Below is an instruction that describes a task. Write a response that
  appropriately completes the request.  \\n\\n" (two spaces after "request.") then
  S"### Instruction:\\n" S instruction "\\n" S"\\n" S"### Response:\\n" S output — the blank
  line holds 16 spaces;
- train, with input: the sentence "...paired with an input that provides further context.
  Write a response that appropriately completes the request. \\n\\n" (one space), then the
  instruction block, S"\\n", S"### Input:\\n" S input "\\n", S"\\n", S"### Response:\\n" S output;
- eval, no input: "... completes the request. \\n\\n" (one space), S"### Instruction:\\n" S
  instruction "\\n\\n" S"### Response:\\n" S — empty blank lines; the prompt ends with S;
- eval, with input: "... completes the request.\\n\\n" (no space), the instruction, "\\n\\n",
  S"### Input:\\n" S input "\\n\\n", S"### Response:\\n" S. (Every math and commonsense test item
  has an empty input, so their evaluations only ever use the no-input prompt.)

An example with an empty `input` uses the no-input template (their `if input:`).

Tokenization, as their `tokenize` and `generate_and_tokenize_prompt`:
- ids = [BOS] + encode(train prompt), cut to `cutoff_len` tokens; EOS is appended when the cut
  list is shorter than `cutoff_len` (an example that was cut, or that exactly fills the cutoff,
  has no EOS). Their check that the last id is not already EOS never fires here: SentencePiece
  produces no control ids from text.
- `train_on_inputs=True` (their default; no published command turns it off): every label after
  BOS counts. False: the first len([BOS] + encode(prompt with an empty output)) ids, cut to
  `cutoff_len`, carry no loss. The prompt is tokenized on its own, as theirs is; where
  SentencePiece joins the 16 spaces that end the prompt to the response's first word, the
  boundary falls where it falls for them.
- Raw ids are cached per (file content, template, tokenizer) by `token_cache`; BOS, cut and EOS
  are applied when rows are built, so changing the cutoff does not re-tokenize.

Held-out split (their `train_test_split(test_size=val_set_size, seed=42)`): `heldout_examples`
of the examples, the first of `np.random.default_rng(split_seed).permutation(n)` (the
permutation HF datasets draws for an integer test size), the rest for training; or, with
`eval_file`, that file's examples.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

import numpy as np

from llama_jax.core.errors import DataError
from llama_jax.data import sources, token_cache
from llama_jax.data.instruction_files import ExampleFile, read_examples

log = logging.getLogger(__name__)

FORMATS = ("text", "instructions")
TEMPLATE_VERSION = "llm-adapters-1"  # part of the cache key: bump when a template changes
S = " " * 16
_HEAD = "Below is an instruction that describes a task. Write a response that appropriately " \
    "completes the request."
_HEAD_INPUT = "Below is an instruction that describes a task, paired with an input that " \
    "provides further context. Write a response that appropriately completes the request."


# ------------------------------------------------------------------------------ templates
def train_prompt(instruction: str, input: str, output: str) -> str:
  """The training text of an example (LLM-Adapters' finetune.py template)."""
  if input:
    return (f"{_HEAD_INPUT} \n\n{S}### Instruction:\n{S}{instruction}\n{S}\n"
            f"{S}### Input:\n{S}{input}\n{S}\n{S}### Response:\n{S}{output}")
  return f"{_HEAD}  \n\n{S}### Instruction:\n{S}{instruction}\n{S}\n{S}### Response:\n{S}{output}"


def eval_prompt(instruction: str, input: str = "") -> str:
  """The evaluation prompt (LLM-Adapters' evaluate.py / commonsense_evaluate.py template)."""
  if input:
    return (f"{_HEAD_INPUT}\n\n{S}### Instruction:\n{S}{instruction}\n\n"
            f"{S}### Input:\n{S}{input}\n\n{S}### Response:\n{S}")
  return f"{_HEAD} \n\n{S}### Instruction:\n{S}{instruction}\n\n{S}### Response:\n{S}"


def user_prompt(example: dict) -> str:
  """The training template with an empty output: the part that train_on_inputs=False masks."""
  return train_prompt(example["instruction"], example["input"], "")


def full_text(example: dict) -> str:
  return train_prompt(example["instruction"], example["input"], example["output"])


# ------------------------------------------------------------------------------ tokenization
@dataclasses.dataclass(frozen=True)
class Settings:
  """How raw text ids become an example: BOS, cut, conditional EOS, loss-free prefix."""
  cutoff_len: int
  train_on_inputs: bool = True
  add_bos: bool = True
  add_eos: bool = True
  bos_id: int = 1
  eos_id: int = 2

  def __post_init__(self):
    if self.cutoff_len < 2:
      raise DataError(f"data.instructions.cutoff_len={self.cutoff_len}; it must be >= 2")
    if self.add_bos and self.bos_id < 0:
      raise DataError("data.add_bos=True but the tokenizer has no BOS token; set add_bos=False")
    if self.add_eos and self.eos_id < 0:
      raise DataError("data.add_eos=True but the tokenizer has no EOS token; set add_eos=False")

  def ids(self, raw) -> list[int]:
    """[BOS] + raw, cut to cutoff_len, then EOS if the result is shorter than cutoff_len."""
    ids = ([self.bos_id] if self.add_bos else []) + [int(t) for t in raw]
    ids = ids[:self.cutoff_len]
    if self.add_eos and len(ids) < self.cutoff_len:
      ids.append(self.eos_id)
    return ids

  def lengths(self, raw_lengths: np.ndarray) -> np.ndarray:
    """len(ids(raw)) for raw texts of these lengths (vectorised `ids`)."""
    n = np.minimum(np.asarray(raw_lengths, np.int64) + int(self.add_bos), self.cutoff_len)
    return n + (self.add_eos & (n < self.cutoff_len))

  def prefix(self, raw_prompt_lengths: np.ndarray | None, count: int) -> np.ndarray:
    """Loss-free leading ids per example: 0 with train_on_inputs, else the prompt's ids."""
    if self.train_on_inputs:
      return np.zeros(count, np.int64)
    return np.minimum(np.asarray(raw_prompt_lengths, np.int64) + int(self.add_bos),
                      self.cutoff_len)


def tokenize_example(tokenizer, example: dict, settings: Settings) -> tuple[list[int], int]:
  """(ids, loss-free prefix) of one example, straight from the tokenizer (no cache)."""
  ids = settings.ids(tokenizer.encode(full_text(example), bos=False, eos=False))
  raw_prompt = tokenizer.encode(user_prompt(example), bos=False, eos=False)
  return ids, int(settings.prefix(np.array([len(raw_prompt)]), 1)[0])


# ------------------------------------------------------------------------------ config
def cutoff_of(data_cfg, seq_len: int) -> int:
  """data.instructions.cutoff_len, with 0 standing for seq_len."""
  return int(data_cfg.instructions.cutoff_len) or int(seq_len)


def check_config(data_cfg, seq_len: int, needs_heldout: bool, check_paths: bool) -> tuple[str, ...]:
  """Raises DataError for instruction settings that cannot work; returns the files named.

  Cheap unless check_paths: then the files are parsed (their records checked), which is what
  makes a broken line fail before any device work.
  """
  ins = data_cfg.instructions
  if data_cfg.format not in FORMATS:
    raise DataError(f"data.format={data_cfg.format!r}; allowed: {list(FORMATS)}")
  if not ins.train_file:
    raise DataError("data.format='instructions' needs data.instructions.train_file (a JSON or "
                    "JSONL file of instruction/input/output records)")
  for name in ("cutoff_len", "heldout_examples", "split_seed"):
    value = ins[name]
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
      raise DataError(f"data.instructions.{name}={value!r}; allowed: an integer >= 0")
  cutoff = cutoff_of(data_cfg, seq_len)
  if cutoff < 2 or cutoff > seq_len:
    raise DataError(f"data.instructions.cutoff_len={ins.cutoff_len} must be within [2, seq_len="
                    f"{seq_len}] (0 = seq_len): an example must fit in one row")
  if ins.eval_file and ins.heldout_examples:
    raise DataError(f"data.instructions.eval_file={ins.eval_file!r} and heldout_examples="
                    f"{ins.heldout_examples} both define the held-out examples; set one")
  if needs_heldout and not ins.eval_file and not ins.heldout_examples:
    raise DataError("the held-out evaluation needs held-out examples: set "
                    "data.instructions.heldout_examples (LLM-Adapters' val_set_size) or "
                    "data.instructions.eval_file, or disable it (eval_every=0)")
  files = tuple(f for f in (ins.train_file, ins.eval_file) if f)
  if check_paths:
    for f in files:
      read_examples(f)
    if ins.heldout_examples:
      n = _count(data_cfg)
      if ins.heldout_examples >= n:
        raise DataError(f"data.instructions.heldout_examples={ins.heldout_examples} leaves no "
                        f"training example of the {n} in {ins.train_file!r}")
  return files


def _count(data_cfg) -> int:
  n = len(read_examples(data_cfg.instructions.train_file))
  cap = int(data_cfg.max_documents or 0)
  return min(n, cap) if cap else n


def count_examples(path: str) -> int:
  """Records in an instruction file (for recipes that turn epochs into steps)."""
  return len(read_examples(path))


# ------------------------------------------------------------------------------ splits
@dataclasses.dataclass(frozen=True)
class Part:
  """Examples of one split: the file they come from and which of its records, in order."""
  file: ExampleFile
  indices: np.ndarray


def split_indices(n: int, heldout: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, held-out) record indices: held-out = the first `heldout` of a seeded permutation."""
  if heldout == 0:
    return np.arange(n), np.zeros(0, np.int64)
  if heldout >= n:
    raise DataError(f"data.instructions.heldout_examples={heldout} leaves no training example "
                    f"of {n}")
  permutation = np.random.default_rng(seed).permutation(n)
  return permutation[heldout:], permutation[:heldout]


def part(data_cfg, which: str) -> Part:
  """The examples of `which` ('train' or 'eval') as the config defines them."""
  ins = data_cfg.instructions
  if which == "eval" and ins.eval_file:
    f = read_examples(ins.eval_file)
    return Part(f, np.arange(len(f)))
  f = read_examples(ins.train_file)
  n = min(len(f), int(data_cfg.max_documents)) if data_cfg.max_documents else len(f)
  train, heldout = split_indices(n, int(ins.heldout_examples), int(ins.split_seed))
  if which == "eval" and not len(heldout):
    raise DataError("the eval split needs held-out examples: set "
                    "data.instructions.heldout_examples or data.instructions.eval_file")
  return Part(f, train if which == "train" else heldout)


def _texts_split(f: ExampleFile, render, kind: str) -> sources.TextSplit:
  """All records of a file rendered by `render`, as a TextSplit the token cache can hold."""
  fp = hashlib.sha256(f"{f.digest}|{kind}|{TEMPLATE_VERSION}".encode()).hexdigest()[:16]
  records = f.records

  def read(indices: np.ndarray) -> list[str]:
    return [render(records[int(i)]) for i in indices]

  return sources.TextSplit(f"{f.path}:{kind}", fp, len(records), read)


def text_split(data_cfg, which: str) -> sources.TextSplit:
  """The training texts (templated examples) of a split: what a tokenizer is trained on."""
  p = part(data_cfg, which)
  whole = _texts_split(p.file, full_text, "full")
  selection = hashlib.sha256(p.indices.tobytes()).hexdigest()
  fp = hashlib.sha256(f"{whole.fingerprint}|{selection}".encode()).hexdigest()[:16]
  return sources.TextSplit(f"{whole.name}:{which}", fp, len(p.indices),
                           lambda idx: whole.texts(p.indices[idx]))


def make_stream(data_cfg, tok, split: str, *, seq_len: int, seed: int, cache_root: str):
  """(the row stream of a split, the settings that identify it for iterator resume)."""
  # Imported here: the rows need grain (seconds to import), the templates and checks do not.
  from llama_jax.data.instruction_rows import InstructionStream
  p = part(data_cfg, split)
  ins = data_cfg.instructions
  settings = Settings(cutoff_of(data_cfg, seq_len), bool(ins.train_on_inputs),
                      bool(data_cfg.add_bos), bool(data_cfg.add_eos), tok.bos_id, tok.eos_id)
  full = token_cache.tokenize_split(_texts_split(p.file, full_text, "full"), tok, cache_root)
  raw_prompt_lengths = None
  if not settings.train_on_inputs:
    prompts = token_cache.tokenize_split(_texts_split(p.file, user_prompt, "prompt"), tok,
                                         cache_root)
    raw_prompt_lengths = prompts.lengths[p.indices]
  lengths = settings.lengths(full.lengths[p.indices])
  prefix = settings.prefix(raw_prompt_lengths, len(p.indices))
  indices = p.indices

  train = split == "train"
  shuffle = bool(data_cfg.shuffle) and train
  stream = InstructionStream(_ExampleIds(full, indices, settings), lengths, prefix,
                             seq_len=seq_len, pack=bool(data_cfg.pack), shuffle=shuffle,
                             seed=seed, repeat=train)
  identity = {"split": split, "format": "instructions", "examples": full.fingerprint,
              "selection": hashlib.sha256(indices.tobytes()).hexdigest()[:16],
              "seed": int(seed) if shuffle else 0, "seq_len": int(seq_len),
              "pack": bool(data_cfg.pack), "cutoff_len": settings.cutoff_len,
              "train_on_inputs": settings.train_on_inputs, "add_bos": settings.add_bos,
              "add_eos": settings.add_eos, "shuffle": shuffle}
  cut = int(np.sum(full.lengths[indices] + int(settings.add_bos) > settings.cutoff_len))
  log.info("%s instructions: %d examples of %s (%d cut to %d tokens), %d tokens, %d rows per "
           "epoch%s", split, len(indices), p.file.path, cut, settings.cutoff_len,
           stream.num_tokens, stream.rows_per_epoch, " (packed)" if data_cfg.pack else "")
  if train and not data_cfg.pack and stream.num_tokens < 0.25 * seq_len * len(indices):
    log.info("rows are %.0f%% padding; data.pack=True would pack several examples per row",
             100 * (1 - stream.num_tokens / (seq_len * len(indices))))
  return stream, identity


class _ExampleIds:
  """Callable j -> ids of the split's j-th example (picklable for grain worker processes)."""

  def __init__(self, full: token_cache.TokenizedDocs, indices: np.ndarray, settings: Settings):
    self.full, self.indices, self.settings = full, np.asarray(indices), settings

  def __call__(self, j: int) -> list[int]:
    return self.settings.ids(self.full.doc(int(self.indices[j])))

