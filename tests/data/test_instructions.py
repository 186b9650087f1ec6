"""Instruction data: LLM-Adapters' templates byte for byte, their tokenization and loss mask
against an independent tokenizer (HF's, converted from the same SentencePiece model), padded
and packed rows, the held-out split, resume, and bad files (file and line named, nothing
written)."""
import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from llama_jax import data
from llama_jax.core.errors import ConfigError, DataError
from llama_jax.data import instructions
from llama_jax.data.instruction_files import read_examples
from llama_jax.training import defaults as base
from llama_jax.training import validation as config_lib

S16 = " " * 16
CUTOFF = 160  # tokens per example in these tests (the long example is cut)
HEAD = ("Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.")
HEAD_INPUT = ("Below is an instruction that describes a task, paired with an input that provides "
              "further context. Write a response that appropriately completes the request.")


# ------------------------------------------------------------------------------ templates
def test_training_templates_are_byte_exact():
  # reference §1.2: two spaces after "request.", blank line of 16 spaces, 16 spaces before
  # every field.
  want = (HEAD + "  \n\n" + S16 + "### Instruction:\n" + S16 + "Add 2 and 3.\n" + S16 + "\n"
          + S16 + "### Response:\n" + S16 + "\nA: 2 + 3 = 5. The answer is 5.")
  assert instructions.train_prompt("Add 2 and 3.", "", "\nA: 2 + 3 = 5. The answer is 5.") == want
  # with an input: one space after "request.", then an Input block between two blank lines of
  # 16 spaces.
  want = (HEAD_INPUT + " \n\n" + S16 + "### Instruction:\n" + S16 + "Translate.\n" + S16 + "\n"
          + S16 + "### Input:\n" + S16 + "bonjour\n" + S16 + "\n" + S16 + "### Response:\n"
          + S16 + "hello")
  assert instructions.train_prompt("Translate.", "bonjour", "hello") == want
  # the part train_on_inputs=False masks: the same template with an empty output
  assert instructions.user_prompt({"instruction": "Q", "input": "", "output": "A"}) == (
      HEAD + "  \n\n" + S16 + "### Instruction:\n" + S16 + "Q\n" + S16 + "\n" + S16
      + "### Response:\n" + S16)


def test_evaluation_templates_are_byte_exact():
  # reference §1.2: one space after "request.", truly empty blank lines, ends with 16 spaces.
  want = (HEAD + " \n\n" + S16 + "### Instruction:\n" + S16 + "Is the sky blue?\n\n" + S16
          + "### Response:\n" + S16)
  assert instructions.eval_prompt("Is the sky blue?") == want
  assert instructions.eval_prompt("Is the sky blue?", "") == want
  want = (HEAD_INPUT + "\n\n" + S16 + "### Instruction:\n" + S16 + "Translate.\n\n" + S16
          + "### Input:\n" + S16 + "bonjour\n\n" + S16 + "### Response:\n" + S16)
  assert instructions.eval_prompt("Translate.", "bonjour") == want
  # The two templates really differ (whitespace only).
  train = instructions.train_prompt("Q", "", "")
  assert train != instructions.eval_prompt("Q") and train.split() == \
      instructions.eval_prompt("Q").split()


# ------------------------------------------------------------------------------ fixtures
def _examples():
  """Math-, commonsense- and alpaca-shaped records; one long enough to be cut at 160 tokens."""
  out = []
  for i in range(18):
    out.append({"instruction": f"Tom has {i + 3} apples and buys {2 * i} more. How many now?",
                "input": "", "output": f"\nA: {i + 3} + {2 * i} = {3 * i + 3}. "
                f"The answer is {3 * i + 3}."})
  for i in range(8):
    out.append({"instruction": "Please choose the correct answer to the question: which is "
                f"heavier?\n\nAnswer1: a feather Answer2: a rock {i}\n\nAnswer format: "
                "answer1/answer2", "input": "",
                "output": f"the correct answer is answer{i % 2 + 1}"})
  for i in range(6):
    out.append({"instruction": "Translate the sentence to English.", "input": f"bonjour {i}",
                "output": f"hello {i}"})
  out.append({"instruction": "Write a long story. " * 12, "input": "",
              "output": "Once upon a time " * 30})
  return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """(data config, tokenizer, records): a JSON array file in LLM-Adapters' shape."""
  root = tmp_path_factory.mktemp("instructions")
  records = _examples()
  path = root / "train.json"
  path.write_text(json.dumps(records, indent=4), encoding="utf-8")
  cfg = base.get_config().data
  cfg.update(dict(format="instructions", cache_dir=str(root / "cache")))
  cfg.instructions.update(dict(train_file=str(path), cutoff_len=CUTOFF, heldout_examples=5))
  tok = data.load_or_train_tokenizer(cfg, vocab_size=400)
  return cfg, tok, records


def _hf_tokenizer(tok, tmp_path):
  """HF's LlamaTokenizer on the same SentencePiece model (converted to its own BPE): the
  independent tokenizer the references below use."""
  from transformers import LlamaTokenizer
  d = tmp_path / "hf_tok"
  d.mkdir()
  (d / "tokenizer.model").write_bytes(Path(tok.path).read_bytes())
  return LlamaTokenizer.from_pretrained(str(d))


def _reference_example(hf_tok, record, cutoff, train_on_inputs):
  """LLM-Adapters' tokenize / generate_and_tokenize_prompt, written from the description:
  (input_ids, labels with -100 for no loss)."""
  bos, eos = hf_tok.bos_token_id, hf_tok.eos_token_id

  def tokenize(text, add_eos):
    ids = ([bos] + hf_tok.encode(text, add_special_tokens=False))[:cutoff]  # BOS, truncation
    if add_eos and ids[-1] != eos and len(ids) < cutoff:
      ids.append(eos)
    return ids

  full = tokenize(template(record, record["output"]), True)
  labels = list(full)
  if not train_on_inputs:
    n = len(tokenize(template(record, ""), False))
    labels = [-100] * n + labels[n:]
  return full, labels


def template(record, output):
  """The training template, written from the reference's byte description."""
  if record["input"]:
    return (HEAD_INPUT + " \n\n" + S16 + "### Instruction:\n" + S16 + record["instruction"]
            + "\n" + S16 + "\n" + S16 + "### Input:\n" + S16 + record["input"] + "\n" + S16
            + "\n" + S16 + "### Response:\n" + S16 + output)
  return (HEAD + "  \n\n" + S16 + "### Instruction:\n" + S16 + record["instruction"] + "\n"
          + S16 + "\n" + S16 + "### Response:\n" + S16 + output)


def _row_labels(row):
  """HF-style labels of the example in a padded row: label[i+1] = target i where it counts."""
  n = int((row["segment_ids"] > 0).sum())
  labels = [-100] + [int(t) if m else -100 for t, m in zip(row["targets"][:n - 1],
                                                            row["loss_mask"][:n - 1])]
  return row["tokens"][:n].tolist(), labels


def _iterator(cfg, tok, split="train", **kw):
  kw = {"batch_size": 4, "seq_len": CUTOFF, "seed": 0, **kw}
  return data.make_iterator(cfg, tok, split, **kw)


def _all_rows(cfg, tok, split, n_rows, **kw):
  it = _iterator(cfg, tok, split, **kw)
  rows = []
  while len(rows) < n_rows:
    batch = next(it)
    rows += [{k: v[i] for k, v in batch.items()} for i in range(len(batch["tokens"]))]
  it.close()
  return rows[:n_rows]


# ------------------------------------------------------------------------------ tokenization
@pytest.mark.parametrize("train_on_inputs", [True, False])
def test_rows_equal_their_tokenization_and_loss_mask(setup, tmp_path, train_on_inputs):
  """Every example, unshuffled and padded one per row, equals LLM-Adapters' input_ids and
  labels computed with an independent tokenizer (HF's), prompt and full text tokenized
  separately."""
  cfg, tok, records = setup
  cfg = cfg.copy_and_resolve_references()
  cfg.update(dict(shuffle=False, pack=False))
  cfg.instructions.update(dict(heldout_examples=0, train_on_inputs=train_on_inputs))
  hf_tok = _hf_tokenizer(tok, tmp_path)
  rows = _all_rows(cfg, tok, "train", len(records))
  cut = eos_free = 0
  for record, row in zip(records, rows):
    want_ids, want_labels = _reference_example(hf_tok, record, CUTOFF, train_on_inputs)
    ids, labels = _row_labels(row)
    assert ids == want_ids
    assert labels[1:] == want_labels[1:]  # label 0 is never predicted (HF shifts labels)
    cut += len(ids) == CUTOFF
    eos_free += ids[-1] != tok.eos_id
    if train_on_inputs:
      assert labels[1:] == ids[1:]  # every label after BOS
    elif len(ids) < CUTOFF:  # the cut example's prompt alone fills the cutoff: no labels
      assert -100 in labels[1:] and any(x != -100 for x in labels)
  assert cut == 1 and eos_free == 1  # the long example is cut and has no EOS


def test_example_that_exactly_fills_the_cutoff_gets_no_eos(setup):
  _, tok, records = setup
  n = len(tok.encode(instructions.full_text(records[0]), bos=True))
  exact = instructions.Settings(cutoff_len=n, bos_id=tok.bos_id, eos_id=tok.eos_id)
  ids, _ = instructions.tokenize_example(tok, records[0], exact)
  assert len(ids) == n and ids[-1] != tok.eos_id
  longer = instructions.Settings(cutoff_len=n + 1, bos_id=tok.bos_id, eos_id=tok.eos_id)
  ids, _ = instructions.tokenize_example(tok, records[0], longer)
  assert len(ids) == n + 1 and ids[-1] == tok.eos_id


def test_packed_rows_hold_whole_examples_in_their_own_segments(setup):
  """pack=True: each example once per epoch, never split, positions from 0, the same tokens
  and loss mask as alone; rows are filled next-fit (the next example did not fit)."""
  cfg, tok, records = setup
  cfg = cfg.copy_and_resolve_references()
  cfg.update(dict(shuffle=True, pack=True))
  cfg.instructions.update(dict(heldout_examples=0, train_on_inputs=False))
  settings = instructions.Settings(CUTOFF, False, True, True, tok.bos_id, tok.eos_id)
  alone = {}
  for r in records:
    ids, prefix = instructions.tokenize_example(tok, r, settings)
    mask = [float(i + 1 >= prefix) for i in range(len(ids) - 1)]
    alone[tuple(ids)] = mask
  it = _iterator(cfg, tok, seq_len=2 * CUTOFF, batch_size=2)
  rows_per_epoch = it.stream.rows_per_epoch
  assert rows_per_epoch < len(records)  # several examples share rows
  offset = 0
  for epoch in range(3):  # rows per epoch may differ: each epoch is packed in its own order
    seen = []
    n_rows = it.stream.rows_in_epoch(epoch)
    rows = [it.stream.row(offset + r) for r in range(n_rows)]
    offset += n_rows
    for row in rows:
      seg = row["segment_ids"]
      used = int((seg > 0).sum())
      assert np.all(seg[:used] > 0) and np.all(seg[used:] == 0)
      for s in range(1, seg.max() + 1):
        where = np.flatnonzero(seg == s)
        ids = tuple(row["tokens"][where].tolist())
        assert ids in alone
        np.testing.assert_array_equal(row["positions"][where], np.arange(len(where)))
        np.testing.assert_array_equal(row["loss_mask"][where[:-1]], alone[ids])
        assert row["loss_mask"][where[-1]] == 0  # no target across examples
        np.testing.assert_array_equal(row["targets"][where[:-1]], row["tokens"][where[1:]])
        seen.append(ids)
    assert sorted(seen) == sorted(alone)  # every example exactly once
    for row, nxt in itertools.pairwise(rows):  # next fit: the next row's first example overflowed
      first = int((nxt["segment_ids"] == 1).sum())
      assert int((row["segment_ids"] > 0).sum()) + first > 2 * CUTOFF
  # epochs differ in order
  assert not np.array_equal(it.stream.row(0)["tokens"], it.stream.row(rows_per_epoch)["tokens"])
  it.close()


# ------------------------------------------------------------------------------ splits
def test_heldout_split_is_the_seeded_permutation_and_disjoint(setup):
  cfg, tok, records = setup
  cfg = cfg.copy_and_resolve_references()
  cfg.update(dict(shuffle=False, pack=False))
  train, held = instructions.split_indices(len(records), 5, 42)
  perm = np.random.default_rng(42).permutation(len(records))  # HF datasets' train_test_split
  np.testing.assert_array_equal(held, perm[:5])
  np.testing.assert_array_equal(train, perm[5:])
  eval_rows = _all_rows(cfg, tok, "eval", 5)
  train_rows = _all_rows(cfg, tok, "train", len(records) - 5)
  def texts(rows):
    return [tok.decode(r["tokens"][r["segment_ids"] > 0])[:60] for r in rows]

  def want(indices):
    return [instructions.full_text(records[i])[:60] for i in indices]

  assert texts(eval_rows) == want(held)
  assert texts(train_rows) == want(train)
  it = _iterator(cfg, tok, "eval", batch_size=4)
  assert len(it) == 2  # 5 examples, one per row, in batches of 4: one pass
  last = [next(it), next(it)][1]
  assert last["loss_mask"][1:].sum() == 0  # the completed batch's padding rows
  it.close()


def test_eval_file_gives_the_heldout_examples(setup, tmp_path):
  cfg, tok, records = setup
  cfg = cfg.copy_and_resolve_references()
  path = tmp_path / "eval.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in records[:3]) + "\n")
  cfg.instructions.update(dict(eval_file=str(path), heldout_examples=0))
  cfg.update(dict(pack=False))
  rows = _all_rows(cfg, tok, "eval", 3)
  for _r, row in zip(records[:3], rows):
    assert tok.decode(row["tokens"][row["segment_ids"] > 0]).startswith(HEAD)


def test_resume_equals_uninterrupted(setup):
  cfg, tok, _ = setup
  for pack in (False, True):
    c = cfg.copy_and_resolve_references()
    c.pack = pack
    it = _iterator(c, tok, batch_size=4)
    straight = [next(it) for _ in range(12)]  # several epochs
    state = None
    it2 = _iterator(c, tok, batch_size=4)
    for _ in range(5):
      next(it2)
    state = it2.get_state()
    it3 = _iterator(c, tok, batch_size=4)
    it3.set_state(state)
    for a, b in zip(straight[5:], [next(it3) for _ in range(7)]):
      for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    for i in (it, it2, it3):
      i.close()
  # A changed setting is refused.
  c = cfg.copy_and_resolve_references()
  c.instructions.train_on_inputs = False
  it4 = _iterator(c, tok, batch_size=4)
  with pytest.raises(DataError, match="train_on_inputs"):
    it4.set_state(state)
  it4.close()


# ------------------------------------------------------------------------------ bad inputs
BAD_JSONL = [
    ('{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "c", "output": "d"}\n',
     r"bad\.jsonl:2: the record lacks the field\(s\) \['input'\]"),
    ('{"instruction": "a", "input": "", "output": "b"}\n\n{"instruction": "c", "input": ""\n',
     r"bad\.jsonl:3:\d+: broken JSON"),
    ('{"instruction": "a", "input": "", "output": 5}\n', r"bad\.jsonl:1: field 'output' is 5"),
    ('{"instruction": "a", "input": "", "output": "b"}\n["instruction", "input"]\n',
     r"bad\.jsonl:2: a record is a list"),
]


@pytest.mark.parametrize("text,match", BAD_JSONL)
def test_bad_jsonl_names_file_and_line(tmp_path, text, match):
  path = tmp_path / "bad.jsonl"
  path.write_text(text)
  with pytest.raises(DataError, match=match):
    read_examples(path)


def test_bad_json_array_names_the_line_of_the_record(tmp_path):
  good = {"instruction": "a", "input": "", "output": "b"}
  records = [good, good, {"instruction": "x", "input": ""}, good]
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(records, indent=4))
  line = 1 + 2 * 5 + 1  # "[", two 5-line records, then the third starts
  with pytest.raises(DataError, match=rf"bad\.json:{line}: the record lacks the field\(s\) "
                                      r"\['output'\]"):
    read_examples(path)
  path.write_text(json.dumps([good, good], indent=4).replace('"b"\n    },', '"b"\n    }\n'))
  with pytest.raises(DataError, match=r"bad\.json:8:5: broken JSON \(expected ','"):
    read_examples(path)
  path.write_text("")
  with pytest.raises(DataError, match="holds no records"):
    read_examples(path)


def test_bad_file_fails_before_anything_is_written(tmp_path):
  """A broken record fails the tokenizer, the iterator, validation and the trainer before any
  cache, tokenizer or workdir file exists."""
  path = tmp_path / "train.jsonl"
  lines = [json.dumps({"instruction": f"q{i}", "input": "", "output": f"a{i}"})
           for i in range(20)]
  lines[13] = '{"instruction": "q13", "input": "", "output": "a13"'
  path.write_text("\n".join(lines) + "\n")
  c = base.get_config()
  c.model = base.model_fields("tiny", vocab_size=320, max_position_embeddings=64)
  c.update(dict(seq_len=64, batch_size=8, steps=2, eval_every=0))
  c.optim.warmup_steps = 1
  c.data.update(dict(format="instructions", cache_dir=str(tmp_path / "cache")))
  c.data.instructions.update(dict(train_file=str(path), cutoff_len=64))
  c = config_lib.lock(c)
  where = r"train\.jsonl:14:\d+: broken JSON"
  with pytest.raises(DataError, match=where):
    data.load_or_train_tokenizer(c.data, vocab_size=320)
  with pytest.raises(ConfigError, match=where):
    config_lib.validate(c, n_devices=8)
  from llama_jax.training import loop
  with pytest.raises(ConfigError, match=where):
    loop.run(c, str(tmp_path / "run"))
  assert not (tmp_path / "cache").exists() and not (tmp_path / "run").exists()


def test_config_errors_name_the_field(setup, tmp_path):
  cfg, _, records = setup

  def config(**data_fields):
    c = base.get_config()
    c.model = base.model_fields("tiny", vocab_size=400, max_position_embeddings=128)
    c.update(dict(seq_len=128, batch_size=8, steps=2, eval_every=0))
    c.optim.warmup_steps = 1
    c.data.update(dict(format="instructions", cache_dir=cfg.cache_dir))
    c.data.instructions.update(dict(train_file=cfg.instructions.train_file, cutoff_len=96))
    for k, v in data_fields.items():
      if k in c.data.instructions:
        c.data.instructions[k] = v
      else:
        c.data[k] = v
    return config_lib.lock(c)

  config_lib.validate(config(), n_devices=8)
  cases = [
      (dict(format="chat"), r"data\.format='chat'; allowed: \['text', 'instructions'\]"),
      (dict(train_file=""), r"needs data\.instructions\.train_file"),
      (dict(train_file=str(tmp_path / "none.json")), "does not exist"),
      (dict(cutoff_len=200), r"cutoff_len=200 must be within \[2, seq_len=128\]"),
      (dict(heldout_examples=len(records)), "leaves no training example"),
      (dict(eval_file=cfg.instructions.train_file, heldout_examples=3), "both define"),
  ]
  for fields, match in cases:
    with pytest.raises(ConfigError, match=match):
      config_lib.validate(config(**fields), n_devices=8)
  c = config()
  c.eval_every = 5
  with pytest.raises(ConfigError, match="needs held-out examples"):
    config_lib.validate(c, n_devices=8)


def test_count_and_lengths_agree_with_ids(setup):
  cfg, tok, records = setup
  assert instructions.count_examples(cfg.instructions.train_file) == len(records)
  s = instructions.Settings(cutoff_len=40, bos_id=tok.bos_id, eos_id=tok.eos_id)
  raws = [tok.encode(instructions.full_text(r), bos=False) for r in records]
  np.testing.assert_array_equal(s.lengths(np.array([len(r) for r in raws])),
                                [len(s.ids(r)) for r in raws])
  assert os.path.isdir(cfg.cache_dir)
