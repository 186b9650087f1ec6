"""Packing tokenized documents into fixed-length rows, as a random-access stream of rows.

Layout of one epoch. Documents (each `[BOS] ids [EOS]` as configured) are laid end to end in
the epoch's document order, and the stream is cut every `seq_len` tokens (greedy next-fit with
splitting: no token is dropped and only the epoch's last row has padding):

- `pack=True`: a row holds the end of one document, whole documents, and the start of the
  next. Every piece of a document in a row gets its own segment id (1, 2, ... within the row;
  0 = padding), so attention never crosses documents, and a document continued from the
  previous row starts a fresh segment with positions restarting at 0: a row never sees context
  from another row, so positions restart (the common choice; continuing them would claim a
  context the model does not have).
- `pack=False`: each document is padded up to a multiple of `seq_len`, so a row holds one
  document chunk (segment 1, positions from 0) followed by padding (segment 0).

`targets[i]` is the token after `tokens[i]` in the same document, and `loss_mask[i]` is 1
exactly when that token exists: 0 on padding and on each document's last token (whose next
token would belong to the next document). At a row's end the next token of a document that
continues in the next row is still a valid target (loss_mask 1).

Random access. The number of rows per epoch, `ceil(total slot length / seq_len)`, does not
depend on the document order, so global row `g` is (epoch `g // R`, row `g % R`). Each epoch has
its own document order (a permutation from `(seed, epoch)`) and, so that a batch does not
hold consecutive chunks of a few long documents, its own row order (`grain`'s index_shuffle,
a bijection computed per index in O(1) memory). Building row `g` needs only the document
lengths and a binary search, never the rows before it: this is what makes the loader's state a
single counter, resume exact, and per-process shards slices of the same global batch.
"""
from __future__ import annotations

import dataclasses
import threading

import numpy as np
from grain import experimental as grain_experimental

from llama_jax.core.errors import DataError
from llama_jax.data.token_cache import TokenizedDocs

ROW_FIELDS = {"tokens": np.int32, "targets": np.int32, "segment_ids": np.int32,
              "positions": np.int32, "loss_mask": np.float32}
_SHUFFLE_ROUNDS = 4


@dataclasses.dataclass(frozen=True)
class PackingSpec:
  seq_len: int
  pack: bool = True
  add_bos: bool = True
  add_eos: bool = True
  bos_id: int = 1
  eos_id: int = 2

  def __post_init__(self):
    if self.seq_len < 1:
      raise DataError(f"seq_len={self.seq_len}; it must be >= 1")
    if self.add_bos and self.bos_id < 0:
      raise DataError("data.add_bos=True but the tokenizer has no BOS token; set add_bos=False")
    if self.add_eos and self.eos_id < 0:
      raise DataError("data.add_eos=True but the tokenizer has no EOS token; set add_eos=False")


def _seed32(*entropy: int) -> int:
  return int(np.random.SeedSequence([e % 2**64 for e in entropy]).generate_state(1)[0])


def empty_row(seq_len: int) -> dict[str, np.ndarray]:
  return {name: np.zeros(seq_len, dtype) for name, dtype in ROW_FIELDS.items()}


class PackedStream:
  """Rows of packed documents; `row(g)` for any global row index `g`.

  `repeat=True`: an endless stream of epochs, each in a fresh order when `shuffle`.
  `repeat=False`: one epoch (`rows_per_epoch` rows); later indices give all-padding rows, so a
  final partial batch can be filled without being counted.
  """

  def __init__(self, docs: TokenizedDocs, spec: PackingSpec, *, shuffle: bool, seed: int,
               repeat: bool):
    self.docs = docs
    self.spec = spec
    self.shuffle = bool(shuffle)
    self.seed = int(seed)
    self.repeat = bool(repeat)
    t = spec.seq_len
    self.lengths = docs.lengths + int(spec.add_bos) + int(spec.add_eos)
    self.slots = self.lengths if spec.pack else -(-self.lengths // t) * t
    total = int(self.slots.sum())
    if total == 0:
      raise DataError("the documents hold no tokens (all are empty and add_bos/add_eos are off)")
    self.num_tokens = int(self.lengths.sum())
    self.rows_per_epoch = -(-total // t)
    self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"], state["_layouts"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._layouts = {}
    self._lock = threading.Lock()

  def layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(document order, slot starts[n+1]) of an epoch; the last two epochs are kept."""
    with self._lock:
      cached = self._layouts.get(epoch)
      if cached is None:
        n = len(self.lengths)
        if self.shuffle:
          order = np.random.default_rng(_seed32(self.seed, epoch, 0)).permutation(n)
        else:
          order = np.arange(n)
        starts = np.zeros(n + 1, np.int64)
        np.cumsum(self.slots[order], out=starts[1:])
        cached = (order, starts)
        self._layouts = {e: v for e, v in self._layouts.items() if e == epoch - 1}
        self._layouts[epoch] = cached
      return cached

  def row_position(self, g: int) -> tuple[int, int] | None:
    """(epoch, row within the epoch's layout) of global row `g`; None past a single epoch."""
    epoch, r = divmod(int(g), self.rows_per_epoch)
    if epoch > 0 and not self.repeat:
      return None
    if self.shuffle and self.rows_per_epoch > 1:
      r = grain_experimental.index_shuffle(r, max_index=self.rows_per_epoch - 1,
                                           seed=_seed32(self.seed, epoch, 1),
                                           rounds=_SHUFFLE_ROUNDS)
    return epoch, r

  def _doc_tokens(self, j: int, start: int, stop: int) -> np.ndarray:
    """Tokens [start, stop) of document j with its BOS/EOS."""
    raw = self.docs.doc(j)
    nb = int(self.spec.add_bos)
    out = np.empty(stop - start, np.int32)
    lo, hi = max(start, nb), min(stop, nb + len(raw))
    if hi > lo:
      out[lo - start:hi - start] = raw[lo - nb:hi - nb]
    if start < nb:
      out[0] = self.spec.bos_id
    if stop > nb + len(raw):
      out[-1] = self.spec.eos_id
    return out

  def row(self, g: int) -> dict[str, np.ndarray]:
    t = self.spec.seq_len
    out = empty_row(t)
    where = self.row_position(g)
    if where is None:
      return out
    epoch, r = where
    order, starts = self.layout(epoch)
    lo, hi = r * t, (r + 1) * t
    k = int(np.searchsorted(starts, lo, side="right")) - 1
    segment = 0
    while k < len(order) and starts[k] < hi:
      j = int(order[k])
      length = int(self.lengths[j])
      a = max(lo, int(starts[k])) - int(starts[k])  # piece [a, b) of the document
      b = min(hi, int(starts[k]) + length) - int(starts[k])
      if b > a:
        segment += 1
        dst = int(starts[k]) + a - lo
        n = b - a
        toks = self._doc_tokens(j, a, min(b + 1, length))  # one more: the last target
        out["tokens"][dst:dst + n] = toks[:n]
        out["targets"][dst:dst + len(toks) - 1] = toks[1:]
        out["loss_mask"][dst:dst + len(toks) - 1] = 1.0
        out["segment_ids"][dst:dst + n] = segment
        out["positions"][dst:dst + n] = np.arange(n, dtype=np.int32)
      k += 1
    return out
