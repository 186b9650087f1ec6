"""Tokenized instruction examples as training rows: one example per row (padded) or packed.

An example is the id list `instructions.example_ids` makes (BOS, the templated text cut to the
cutoff, a conditional EOS) plus the number of leading tokens that carry no loss. In a row,
`tokens[i]` is id i, `targets[i]` id i+1 and `loss_mask[i]` is 1 exactly when id i+1 is a
label: inside the example and not in its loss-free prefix. That is the causal shift HF
applies to `labels` (whose -100 entries are masked), so the summed loss over a row equals the
summed loss over the example's labels.

- `pack=False` (LLM-Adapters' batches): row r of an epoch holds one example (segment 1,
  positions from 0) followed by padding (segment 0). Their collator left-pads to a multiple of
  8; with segment ids and per-example positions the side and amount of padding change nothing.
- `pack=True`: whole examples are laid in rows greedily (next fit: an example that does not
  fit in the rest of the row starts the next one; none is ever split), each in its own segment
  with positions from 0, so attention never crosses examples. The rows are rebuilt for each
  epoch from that epoch's example order, so their number can differ by a few between epochs.

Random access: global row g is (epoch, row) from the rows per epoch; an epoch's layout (its
example order and, when packing, where each row starts) is computed on first use and the last
two are kept, like `packing.PackedStream`, whose interface (`row`, `rows_per_epoch`,
`num_tokens`) this stream shares, so the grain iterator serves both.
"""
from __future__ import annotations

import threading

import numpy as np

from llama_jax.core.errors import DataError
from llama_jax.data.packing import empty_row


class InstructionStream:
  """Rows of examples `ids(j)` (j in 0..n-1) with loss-free prefixes `prefix[j]`.

  `ids(j)` returns example j's ids (any sequence of ints, at most `seq_len` long).
  `repeat=True`: endless epochs, each in a fresh order when `shuffle`; `repeat=False`: one
  epoch, later rows are all padding (so a last partial batch can be completed).
  """

  def __init__(self, ids, lengths: np.ndarray, prefix: np.ndarray, *, seq_len: int,
               pack: bool, shuffle: bool, seed: int, repeat: bool):
    self.ids = ids
    self.lengths = np.asarray(lengths, np.int64)
    self.prefix = np.asarray(prefix, np.int64)
    self.seq_len = int(seq_len)
    self.pack = bool(pack)
    self.shuffle = bool(shuffle)
    self.seed = int(seed)
    self.repeat = bool(repeat)
    if len(self.lengths) == 0:
      raise DataError("the instruction split holds no examples")
    if self.lengths.max() > self.seq_len:
      raise DataError(f"an example has {int(self.lengths.max())} tokens, more than seq_len="
                      f"{self.seq_len}; set data.instructions.cutoff_len <= seq_len")
    self.num_tokens = int(self.lengths.sum())
    self._layouts: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    self._epoch_rows: dict[int, int] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    state = self.__dict__.copy()
    del state["_lock"], state["_layouts"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._layouts = {}
    self._lock = threading.Lock()

  # ------------------------------------------------------------------------------ layout
  def _order(self, epoch: int) -> np.ndarray:
    n = len(self.lengths)
    if not self.shuffle:
      return np.arange(n)
    # One generator per (seed, epoch): any epoch's order is computed without the earlier ones.
    return np.random.default_rng([self.seed % 2**63, epoch, 2]).permutation(n)

  def layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(example order, row starts[R+1] into that order) of an epoch."""
    with self._lock:
      cached = self._layouts.get(epoch)
      if cached is None:
        order = self._order(epoch)
        if self.pack:
          starts, fill = [0], 0
          for k, length in enumerate(self.lengths[order].tolist()):
            if fill + length > self.seq_len:
              starts.append(k)
              fill = 0
            fill += length
          starts.append(len(order))
          bounds = np.asarray(starts, np.int64)
        else:
          bounds = np.arange(len(order) + 1, dtype=np.int64)
        cached = (order, bounds)
        self._layouts = {e: v for e, v in self._layouts.items() if e == epoch - 1}
        self._layouts[epoch] = cached
        self._epoch_rows[epoch] = len(bounds) - 1
      return cached

  def rows_in_epoch(self, epoch: int) -> int:
    if not self.pack or not self.shuffle:
      epoch = 0  # every epoch has the same rows
    if epoch not in self._epoch_rows:
      self.layout(epoch)
    return self._epoch_rows[epoch]

  @property
  def rows_per_epoch(self) -> int:
    """Rows of the first epoch (of every epoch unless packing a shuffled stream)."""
    return self.rows_in_epoch(0)

  def row_position(self, g: int) -> tuple[int, int] | None:
    """(epoch, row within it) of global row g; None past a single epoch."""
    g = int(g)
    if not self.pack or not self.shuffle:
      epoch, r = divmod(g, self.rows_per_epoch)
    else:
      epoch, r = 0, g
      while r >= self.rows_in_epoch(epoch):
        r -= self.rows_in_epoch(epoch)
        epoch += 1
        if not self.repeat:
          return None
    if epoch > 0 and not self.repeat:
      return None
    return epoch, r

  # ------------------------------------------------------------------------------ rows
  def row(self, g: int) -> dict[str, np.ndarray]:
    out = empty_row(self.seq_len)
    where = self.row_position(g)
    if where is None:
      return out
    epoch, r = where
    order, bounds = self.layout(epoch)
    dst = 0
    for segment, k in enumerate(range(int(bounds[r]), int(bounds[r + 1])), start=1):
      j = int(order[k])
      ids = np.asarray(self.ids(j), np.int32)
      n = len(ids)
      out["tokens"][dst:dst + n] = ids
      out["targets"][dst:dst + n - 1] = ids[1:]
      # Label i+1 counts when it lies past the loss-free prefix.
      labels = np.arange(1, n) >= self.prefix[j]
      out["loss_mask"][dst:dst + n - 1] = labels
      out["segment_ids"][dst:dst + n] = segment
      out["positions"][dst:dst + n] = np.arange(n, dtype=np.int32)
      dst += n
    return out
