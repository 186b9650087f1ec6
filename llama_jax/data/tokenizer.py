"""SentencePiece tokenizer compatible with LLaMA's `tokenizer.model`, and a trainer for new ones.

LLaMA's tokenizer is a SentencePiece BPE model with unk=0, BOS=1, EOS=2, no pad id, byte
fallback (a character outside the vocabulary becomes its UTF-8 bytes `<0x..>`, never `<unk>`),
digits split into single pieces, and no text normalisation. `train_tokenizer` trains a model
with exactly these settings; `Tokenizer` loads either kind.

No normalisation matters for code: runs of spaces, tabs, `\\r` and newlines survive the round
trip `decode(encode(text)) == text`. SentencePiece learns pieces from lines, so a newline never
becomes part of a learned piece; it is encoded through byte fallback as `<0x0A>`, as in LLaMA.

Errors are `DataError` (a `ValueError`); it is defined here, the leaf of the data stack, and
re-exported as `llama_jax.data.DataError`.
"""
from __future__ import annotations

import hashlib
import io
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import sentencepiece as spm

from llama_jax.core.errors import DataError

UNK_ID, BOS_ID, EOS_ID = 0, 1, 2
# Pieces every trained model needs: 3 special ids + 256 byte-fallback pieces.
MIN_VOCAB_SIZE = 3 + 256 + 1
# SentencePiece silently drops training sentences longer than its max_sentence_length (bytes);
# long lines are cut to this many characters (<= 4 bytes each) so that they still count.
_MAX_LINE_CHARS = 4096
DEFAULT_TRAIN_CHARS = 5_000_000
# character_coverage values tried in turn when the vocabulary is too small for every character
# of the training text (0 = LLaMA's own value; SentencePiece accepts no less than 0.98).
_COVERAGE_FALLBACKS = (0, 0.9995, 0.999, 0.995, 0.99, 0.98)

# LLaMA's trainer settings (its tokenizer.model's trainer_spec), with a soft vocabulary limit so
# that a small corpus yields a smaller vocabulary instead of a failure.
LLAMA_TRAINER_SETTINGS = dict(
    model_type="bpe",
    byte_fallback=True,
    split_digits=True,
    unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, pad_id=-1,
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    add_dummy_prefix=True,
    allow_whitespace_only_pieces=True,
    split_by_unicode_script=True,
    split_by_whitespace=True,
    character_coverage=0.99995,
    max_sentencepiece_length=16,
    max_sentence_length=4 * _MAX_LINE_CHARS,
    hard_vocab_limit=False,
)




class Tokenizer:
  """A loaded SentencePiece model: `encode`, `decode` and the special ids.

  Picklable (it carries the serialized model), so grain worker processes can use it.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    full = os.path.expanduser(self.path)
    if not os.path.isfile(full):
      raise DataError(f"tokenizer file {self.path!r} does not exist; give a SentencePiece .model "
                      "file (e.g. LLaMA's tokenizer.model), or set data.tokenizer='' to train one")
    with open(full, "rb") as f:
      self._load(f.read())

  @classmethod
  def from_bytes(cls, model_proto: bytes, path: str = "<memory>") -> Tokenizer:
    tok = cls.__new__(cls)
    tok.path = path
    tok._load(model_proto)
    return tok

  def _load(self, model_proto: bytes):
    sp = spm.SentencePieceProcessor()
    try:
      sp.LoadFromSerializedProto(model_proto)
    except Exception as e:  # sentencepiece raises RuntimeError/OSError for a bad proto
      raise DataError(f"tokenizer {self.path!r} is not a readable SentencePiece model: {e}") \
          from None
    self._proto = model_proto
    self._sp = sp
    self.fingerprint = hashlib.sha256(model_proto).hexdigest()[:16]

  def __getstate__(self):
    return {"path": self.path, "proto": self._proto}

  def __setstate__(self, state):
    self.path = state["path"]
    self._load(state["proto"])

  def __repr__(self):
    return f"Tokenizer({self.path!r}, vocab_size={self.vocab_size})"

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def bos_id(self) -> int:
    return self._sp.bos_id()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    """-1 for LLaMA's tokenizer: it has no pad token (batches mark padding with segment id 0)."""
    return self._sp.pad_id()

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  def id_to_piece(self, token_id: int) -> str:
    return self._sp.id_to_piece(int(token_id))

  def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
    ids = self._sp.encode(text)
    return self._wrap(ids, bos, eos)

  def encode_batch(self, texts: Sequence[str], bos: bool = False, eos: bool = False,
                   num_threads: int = 0) -> list[list[int]]:
    """`encode` over many texts with SentencePiece's own threads (0 = all cores)."""
    ids = self._sp.encode(list(texts), num_threads=num_threads or (os.cpu_count() or 1))
    return [self._wrap(x, bos, eos) for x in ids]

  def _wrap(self, ids: list[int], bos: bool, eos: bool) -> list[int]:
    if bos:
      if self.bos_id < 0:
        raise DataError(f"tokenizer {self.path!r} has no BOS token; encode with bos=False")
      ids = [self.bos_id] + ids
    if eos:
      if self.eos_id < 0:
        raise DataError(f"tokenizer {self.path!r} has no EOS token; encode with eos=False")
      ids = ids + [self.eos_id]
    return ids

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids`; control tokens (BOS/EOS) produce no text."""
    if not isinstance(ids, np.ndarray):
      ids = list(ids)
    ids = np.asarray(ids, dtype=np.int64).reshape(-1).tolist()
    bad = [i for i in ids if not 0 <= i < self.vocab_size]
    if bad:
      raise DataError(f"token ids {bad[:5]} are outside the vocabulary of {self.path!r} "
                      f"(0..{self.vocab_size - 1})")
    return self._sp.decode(ids)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, *, bos_id: int | None = None,
                eos_id: int | None = None) -> None:
  """Raises DataError when the tokenizer cannot drive a model with `model_vocab_size` embeddings.

  A tokenizer larger than the model's embedding table would index past it. A smaller one is
  allowed (the extra rows are never used, as with vocabularies padded to a multiple of 64).
  `bos_id`/`eos_id`, when given (the model config's), must match the tokenizer's.
  """
  if tokenizer.vocab_size > model_vocab_size:
    raise DataError(
        f"tokenizer {tokenizer.path!r} has {tokenizer.vocab_size} tokens but model.vocab_size="
        f"{model_vocab_size}: token ids up to {tokenizer.vocab_size - 1} would index past the "
        f"embedding table, so it is not the tokenizer this model was trained with. Set "
        f"--config.model.vocab_size={tokenizer.vocab_size} to train a model for it, or use a "
        f"tokenizer with at most {model_vocab_size} tokens")
  for name, want, have in (("bos_id", bos_id, tokenizer.bos_id),
                           ("eos_id", eos_id, tokenizer.eos_id)):
    if want is not None and want != have:
      raise DataError(f"tokenizer {tokenizer.path!r} has {name}={have} but model.{name}={want}; "
                      f"set --config.model.{name}={have}")


def _training_lines(texts: Iterable[str | os.PathLike], max_chars: int) -> list[str]:
  """Non-blank lines of the texts (or of the files, for Path items), up to `max_chars`."""
  lines, total = [], 0
  for item in texts:
    if isinstance(item, os.PathLike):
      try:
        item = Path(item).read_text(encoding="utf-8")
      except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read tokenizer training file {os.fspath(item)!r} as UTF-8 text: "
                        f"{e}") from None
    for line in item.split("\n"):
      if not line.strip():
        continue
      for start in range(0, len(line), _MAX_LINE_CHARS):
        piece = line[start:start + _MAX_LINE_CHARS]
        lines.append(piece)
        total += len(piece)
      if total >= max_chars:
        return lines
  return lines


def train_tokenizer(texts_iterable_or_files: Iterable[str | os.PathLike], vocab_size: int,
                    model_path: str | os.PathLike, *, max_chars: int = DEFAULT_TRAIN_CHARS,
                    num_threads: int = 0) -> Tokenizer:
  """Trains a BPE model with LLaMA's settings and writes it to `model_path` (atomically).

  `texts_iterable_or_files` yields texts (`str`) or files (`pathlib.Path`, read as UTF-8). The
  first `max_chars` characters of non-blank lines are used, in the order given: pass a sample.
  The vocabulary is a soft limit: a corpus too small for `vocab_size` gives a smaller model
  (check `Tokenizer.vocab_size`). A vocabulary too small to give every character of the text
  its own piece lowers `character_coverage` step by step; the characters left out are encoded
  as bytes, so round trips stay exact.
  """
  if vocab_size < MIN_VOCAB_SIZE:
    raise DataError(f"tokenizer vocab_size={vocab_size} is too small: byte fallback needs "
                    f"3 special + 256 byte pieces; use at least {MIN_VOCAB_SIZE}")
  if isinstance(texts_iterable_or_files, (str, bytes)):
    raise DataError("train_tokenizer takes an iterable of texts or of pathlib.Path files, not a "
                    "single string; wrap it in a list")
  lines = _training_lines(texts_iterable_or_files, max_chars)
  if not lines:
    raise DataError("train_tokenizer got no text (every document is empty or blank)")
  settings = dict(LLAMA_TRAINER_SETTINGS)
  for coverage in _COVERAGE_FALLBACKS:
    model = io.BytesIO()
    settings["character_coverage"] = coverage or LLAMA_TRAINER_SETTINGS["character_coverage"]
    try:
      spm.SentencePieceTrainer.train(
          sentence_iterator=iter(lines), model_writer=model, vocab_size=vocab_size,
          num_threads=num_threads or min(os.cpu_count() or 1, 16), minloglevel=2, **settings)
      break
    except RuntimeError as e:
      # A small vocabulary may not hold one piece per character seen (plus the 259 special and
      # byte pieces): cover fewer characters; the rare ones are then spelled as bytes.
      if "required_chars" not in str(e) or coverage == _COVERAGE_FALLBACKS[-1]:
        raise DataError(f"SentencePiece could not train a {vocab_size}-token model on "
                        f"{len(lines)} lines: {e}") from None
  model_path = os.path.expanduser(os.fspath(model_path))
  os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
  # Write next to the destination and rename, so a crash never leaves a truncated model.
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(model_path)),
                             prefix=".tmp-", suffix=".model")
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(model.getvalue())
    os.replace(tmp, model_path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
  return Tokenizer(model_path)
