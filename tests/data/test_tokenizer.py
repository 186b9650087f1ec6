"""Tokenizer: LLaMA's special ids and settings, exact round trips, byte fallback, vocab checks.

One small BPE model is trained per module on a slice of the standard library's sources; round
trips are checked on other standard-library files it was not trained on.
"""
import os
import pickle
import sysconfig
from pathlib import Path

import pytest

from llama_jax.data import tokenizer as tokenizer_lib
from llama_jax.data.tokenizer import DataError, Tokenizer

STDLIB = Path(sysconfig.get_paths()["stdlib"])
TRAIN_FILES = ["json/decoder.py", "json/encoder.py", "textwrap.py", "string.py", "bisect.py",
               "heapq.py", "fnmatch.py", "shlex.py"]
# Not in the training set; with tabs, long lines, docstrings, unicode in comments.
HELDOUT_FILES = ["os.py", "argparse.py", "ast.py", "csv.py", "difflib.py", "html/entities.py",
                 "codecs.py",
                 "email/_header_value_parser.py", "locale.py", "tabnanny.py"]
UNICODE_TEXTS = [
    "Grüße aus Köln — naïve café, résumé.",
    "日本語のテキストと中文文本。",
    "emoji 🦙🐍 and symbols ∀x∈ℝ: x² ≥ 0",
    "tabs\tand\r\nwindows line ends\r\n",
    "trailing spaces   \n\n\n   indented after blank lines\n",
    "",
]
VOCAB = 640


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
  files = [STDLIB / f for f in TRAIN_FILES]
  return tokenizer_lib.train_tokenizer(files, VOCAB, path)


def test_llama_special_ids(tok):
  assert tok.vocab_size == VOCAB
  assert (tok.unk_id, tok.bos_id, tok.eos_id, tok.pad_id) == (0, 1, 2, -1)
  assert tok.id_to_piece(1) == "<s>" and tok.id_to_piece(2) == "</s>"
  ids = tok.encode("import os", bos=True, eos=True)
  assert ids[0] == 1 and ids[-1] == 2 and 1 not in ids[1:-1] and 2 not in ids[1:-1]
  assert tok.encode("import os")[0] == 1 and tok.encode("import os")[-1] != 2  # defaults
  assert tok.encode("import os", bos=False) == ids[1:-1]
  assert tok.decode(ids) == "import os"  # control tokens produce no text


def test_round_trip_python_source_not_seen_in_training(tok):
  for name in HELDOUT_FILES:
    text = (STDLIB / name).read_text(encoding="utf-8")
    ids = tok.encode(text, bos=True, eos=True)
    assert tok.decode(ids) == text, name
    assert tok.unk_id not in ids, name
  # Whitespace is never normalised away: indentation runs and blank-line runs survive.
  code = "class A:\n\tdef f(self):\n        return  {'a':  1}\n\n\n# end  \n"
  assert tok.decode(tok.encode(code)) == code


def test_round_trip_unicode_and_byte_fallback(tok):
  for text in UNICODE_TEXTS:
    ids = tok.encode(text, bos=False)
    assert tok.decode(ids) == text
    assert tok.unk_id not in ids
  # A character absent from training becomes exactly its UTF-8 bytes, never <unk>.
  for char in ("🦙", "ꙮ", "\x00"):
    pieces = [tok.id_to_piece(i) for i in tok.encode(char, bos=False)]
    byte_pieces = [p for p in pieces if p.startswith("<0x")]
    assert byte_pieces == [f"<0x{b:02X}>" for b in char.encode("utf-8")], (char, pieces)
  # A newline is a byte piece too, as in LLaMA (pieces are learned from lines).
  assert "<0x0A>" in [tok.id_to_piece(i) for i in tok.encode("a\nb", bos=False)]


def test_digits_are_split(tok):
  ids = tok.encode("1234567890", bos=False)
  digits = [tok.id_to_piece(i).lstrip("\u2581") for i in ids]
  assert [d for d in digits if d] == list("1234567890")


def test_matches_hf_llama_tokenizer(tok, tmp_path):
  """HF reads our model as a LLaMA tokenizer and produces the same ids (independent reader)."""
  transformers = pytest.importorskip("transformers")
  (tmp_path / "tokenizer.model").write_bytes(open(tok.path, "rb").read())
  hf = transformers.LlamaTokenizer.from_pretrained(str(tmp_path))
  # Texts that do not start with whitespace: HF's converted LLaMA tokenizer treats a leading
  # space differently from SentencePiece (its own documented `legacy` quirk).
  texts = [(STDLIB / n).read_text(encoding="utf-8") for n in ("csv.py", "tabnanny.py")]
  texts += [t for t in UNICODE_TEXTS if t and not t[0].isspace()]
  for text in texts:
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text, bos=False)
  assert (hf.bos_token_id, hf.eos_token_id, hf.unk_token_id) == (1, 2, 0)


def test_check_vocab(tok):
  tokenizer_lib.check_vocab(tok, VOCAB)
  tokenizer_lib.check_vocab(tok, VOCAB + 64)  # a padded embedding table is fine
  with pytest.raises(DataError, match=rf"has {VOCAB} tokens but model.vocab_size={VOCAB - 1}.*"
                                      rf"--config.model.vocab_size={VOCAB}"):
    tokenizer_lib.check_vocab(tok, VOCAB - 1)
  with pytest.raises(DataError, match="bos_id=1 but model.bos_id=0"):
    tokenizer_lib.check_vocab(tok, VOCAB, bos_id=0)
  assert isinstance(DataError("x"), ValueError)


def test_pickle_and_batch_encode(tok):
  clone = pickle.loads(pickle.dumps(tok))
  texts = ["def f():\n  pass\n", "x = 1", ""]
  assert clone.encode_batch(texts, bos=True) == [tok.encode(t) for t in texts]
  assert clone.fingerprint == tok.fingerprint


def test_bad_model_files(tmp_path):
  with pytest.raises(DataError, match="does not exist"):
    Tokenizer(tmp_path / "missing.model")
  bad = tmp_path / "bad.model"
  bad.write_bytes(b"not a sentencepiece model")
  with pytest.raises(DataError, match="not a readable SentencePiece model"):
    Tokenizer(bad)
  with pytest.raises(DataError, match="outside the vocabulary"):
    tokenizer_lib.train_tokenizer(["a b c " * 50], 300, tmp_path / "t.model").decode([10**6])


def test_train_errors_and_atomic_output(tmp_path):
  out = tmp_path / "t.model"
  with pytest.raises(DataError, match="too small.*at least 260"):
    tokenizer_lib.train_tokenizer(["hello"], 100, out)
  with pytest.raises(DataError, match="no text"):
    tokenizer_lib.train_tokenizer(["", "   \n\n"], 300, out)
  with pytest.raises(DataError, match="not a\nsingle string|single string"):
    tokenizer_lib.train_tokenizer("some text", 300, out)
  assert not out.exists() and os.listdir(tmp_path) == []  # nothing half-written
  # A small corpus gives a smaller vocabulary (soft limit), not a failure.
  small = tokenizer_lib.train_tokenizer(["abc abd abe\n" * 20], 2000, out)
  assert 259 < small.vocab_size < 2000 and out.exists()
  assert os.listdir(tmp_path) == ["t.model"]


def test_small_vocab_with_many_characters_falls_back_to_bytes(tmp_path):
  """More distinct characters than a small vocabulary holds: the rare ones become bytes."""
  rare = "".join(chr(0x4E00 + i) for i in range(300))  # 300 distinct CJK ideographs, once each
  common = (STDLIB / "textwrap.py").read_text(encoding="utf-8")[:40000]
  text = common + "\n" + " ".join(rare[i:i + 6] for i in range(0, 300, 6)) + "\n"
  tok = tokenizer_lib.train_tokenizer([text], 400, tmp_path / "t.model")
  assert tok.vocab_size <= 400
  ids = tok.encode(text, bos=False)
  assert tok.decode(ids) == text and tok.unk_id not in ids
  assert any(tok.id_to_piece(i).startswith("<0x") for i in ids)
