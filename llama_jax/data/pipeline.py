"""The data loader the trainer calls: tokenizer at first run, then a grain iterator of batches.

Pipeline (grain): `MapDataset.range(local rows)` -> `map(row)` (documents in a per-epoch
shuffled order, tokenized once and cached, packed into rows: `packing.PackedStream`; or, with
`data.format="instructions"`, templated instruction examples, one per row or packed whole:
`instructions.make_stream`) -> `batch` -> `to_iter_dataset` (prefetch threads, optional
worker processes). Everything before the iterator is random access, so:

- the iterator's state is one counter (the next global batch) plus the settings that define
  the stream, JSON-serialisable; `set_state` rebuilds the grain pipeline at that batch, so a
  resumed run sees exactly the batches an uninterrupted one would, whatever `num_workers`;
- process `p` of `P` takes rows `[p*b, (p+1)*b)` of every global batch of `B = P*b` rows: the
  processes' shards are disjoint and together are the single-process batch (sharding
  documents per process, as `ShardByJaxProcess` would, packs different rows per process
  count). Each process tokenizes the corpus into its cache once; rows are cut from it;
  the first use of a split tokenizes all of it (about 0.5M tokens/s on 2 cores here): for a
  web-scale TFDS dataset cap it with `data.max_documents`;
- the training stream repeats forever, reshuffled each epoch from the seed; the eval stream is
  one unshuffled pass over the held-out documents, its last batch completed with all-padding
  rows (loss_mask 0).
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import sys

import grain
import numpy as np

from llama_jax.core.errors import DataError
from llama_jax.data import instructions, packing, sources, token_cache
from llama_jax.data import tokenizer as tokenizer_lib

log = logging.getLogger(__name__)

LOCAL_DATASETS = ("stdlib", "files")
TOKENIZER_SAMPLE_CHARS = tokenizer_lib.DEFAULT_TRAIN_CHARS
_PREFETCH_THREADS = 2


def cache_root(data_cfg) -> str:
  return os.path.abspath(os.path.expanduser(data_cfg.cache_dir or "~/.cache/llama_jax"))


def _is_local(data_cfg) -> bool:
  return bool(data_cfg.files) or data_cfg.dataset in LOCAL_DATASETS


def text_split(data_cfg, which: str) -> sources.TextSplit:
  """The documents of `which` ('train' or 'eval') as the data config defines them."""
  if which not in ("train", "eval"):
    raise DataError(f"split={which!r}; allowed: 'train', 'eval'")
  if data_cfg.format == "instructions":  # templated examples (data/instructions.py)
    return instructions.text_split(data_cfg, which)
  if _is_local(data_cfg):
    return _local_split(data_cfg, which)
  return _tfds_split(data_cfg, which)


def _local_split(data_cfg, which: str) -> sources.TextSplit:
  from llama_jax.data import text_builder  # imports TFDS, which is slow: only when needed

  splits = text_builder.prepare_local(data_cfg, cache_root(data_cfg))
  if which == "train":
    name = data_cfg.train_split
    if name != "train":
      raise DataError(f"data.train_split={name!r}: a local corpus has the splits "
                      f"{sorted(splits)}; its training split is 'train'")
  else:
    name = data_cfg.eval_split or "heldout"
    if name == "heldout" and "heldout" not in splits:
      raise DataError("the eval split needs held-out documents: set data.heldout_fraction > 0 "
                      f"(it is {data_cfg.heldout_fraction}), or data.eval_split='train'")
    if name not in splits:
      raise DataError(f"data.eval_split={name!r}: a local corpus has the splits "
                      f"{sorted(splits)}")
  return splits[name]


def _tfds_split(data_cfg, which: str) -> sources.TextSplit:
  name, data_dir = data_cfg.dataset, data_cfg.tfds_data_dir
  real_eval = which == "eval" and bool(data_cfg.eval_split)
  split = data_cfg.eval_split if real_eval else data_cfg.train_split
  source, size, version = sources.open_tfds(name, data_dir, split)
  if data_cfg.max_documents:
    size = min(size, int(data_cfg.max_documents))
  index_map, part = None, split
  if not data_cfg.eval_split:  # held-out documents come out of the training split
    fraction = float(data_cfg.heldout_fraction)
    if which == "eval" and fraction == 0:
      raise DataError(f"the eval split of data.dataset={name!r} needs held-out documents: set "
                      "data.eval_split to one of its splits, or data.heldout_fraction > 0")
    if fraction > 0:
      held = sources.heldout_mask(size, fraction)
      index_map = np.flatnonzero(held if which == "eval" else ~held)
      part = f"{split}:{'heldout' if which == 'eval' else 'train'}"
  n = size if index_map is None else len(index_map)
  if n == 0:
    raise DataError(f"data.dataset={name!r} split {split!r} has no documents for {which}")
  fp = sources.tfds_fingerprint(name, data_dir, split, version, size, {
      "part": part, "text_key": data_cfg.text_key,
      "heldout_fraction": None if data_cfg.eval_split else float(data_cfg.heldout_fraction)})
  where = f"data.dataset={name!r} split {split!r}"
  return sources.TextSplit(part, fp, n, sources.record_reader(source, data_cfg.text_key, where,
                                                              index_map))


def _tokenizer_sample(split: sources.TextSplit, max_chars: int):
  """Documents spread over the split in a fixed pseudo-random order, up to `max_chars`."""
  rng = np.random.default_rng(0)
  n = len(split)
  order = rng.permutation(n) if n <= 1_000_000 else rng.choice(n, 100_000, replace=False)
  total = 0
  for start in range(0, len(order), 64):
    for text in split.texts(order[start:start + 64]):
      yield text
      total += len(text)
      if total >= max_chars:
        return


def load_or_train_tokenizer(data_cfg, vocab_size: int) -> tokenizer_lib.Tokenizer:
  """`data.tokenizer` if set, else one trained on the training documents (cached).

  The trained tokenizer has `data.tokenizer_vocab_size` tokens (0: `vocab_size`, the model's)
  at most; it is cached under `<cache_dir>/tokenizers/` by a fingerprint of the training
  documents and settings, so only the first run trains. Raises DataError when the tokenizer
  has more tokens than the model's `vocab_size`.
  """
  if data_cfg.tokenizer:
    tok = tokenizer_lib.Tokenizer(data_cfg.tokenizer)
    tokenizer_lib.check_vocab(tok, vocab_size)
    return tok
  want = int(data_cfg.tokenizer_vocab_size or vocab_size)
  if want > vocab_size:
    raise DataError(f"data.tokenizer_vocab_size={want} exceeds model.vocab_size={vocab_size}; "
                    "the model's embedding table must cover every token id: set "
                    f"--config.model.vocab_size={want} or a smaller tokenizer_vocab_size")
  split = text_split(data_cfg, "train")
  settings = repr((split.fingerprint, want, sorted(tokenizer_lib.LLAMA_TRAINER_SETTINGS.items()),
                   TOKENIZER_SAMPLE_CHARS))
  key = hashlib.sha256(settings.encode()).hexdigest()[:16]
  path = os.path.join(cache_root(data_cfg), "tokenizers", f"{key}.model")
  if not os.path.exists(path):
    log.info("Training a %d-token tokenizer on the training documents -> %s", want, path)
    tokenizer_lib.train_tokenizer(_tokenizer_sample(split, TOKENIZER_SAMPLE_CHARS), want, path,
                                  max_chars=TOKENIZER_SAMPLE_CHARS)
  tok = tokenizer_lib.Tokenizer(path)
  tokenizer_lib.check_vocab(tok, vocab_size)
  return tok


class _LocalRow:
  """grain map: local row index -> the packed row it stands for in the global batch."""

  def __init__(self, stream: packing.PackedStream, global_batch: int, local_batch: int,
               process_index: int):
    self.stream = stream
    self.global_batch = global_batch
    self.local_batch = local_batch
    self.offset = process_index * local_batch

  def __call__(self, i: int) -> dict[str, np.ndarray]:
    batch, j = divmod(int(i), self.local_batch)
    return self.stream.row(batch * self.global_batch + self.offset + j)


class DataIterator(grain.DatasetIterator):
  """Batches of this process's rows; `get_state()`/`set_state()` resume exactly.

  Also an orbax/grain checkpointable (`grain.checkpoint.CheckpointHandler` saves it as JSON).
  """

  def __init__(self, stream: packing.PackedStream, *, global_batch: int, process_index: int,
               process_count: int, num_batches: int | None, num_workers: int, identity: dict):
    super().__init__()
    self.stream = stream
    self.global_batch = global_batch
    self.local_batch = global_batch // process_count
    self.process_index = process_index
    self.process_count = process_count
    self.num_batches = num_batches  # None: endless
    self.num_workers = num_workers
    self.identity = identity
    self._next_batch = 0
    self._it = None

  def _grain_iterator(self, start: int):
    b = self.local_batch
    stop = self.num_batches * b if self.num_batches is not None else sys.maxsize
    ds = grain.MapDataset.range(start * b, stop)
    ds = ds.map(_LocalRow(self.stream, self.global_batch, b, self.process_index))
    ds = ds.batch(b)
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=_PREFETCH_THREADS,
                                                 prefetch_buffer_size=4 * b))
    if self.num_workers > 0:
      # grain's worker processes read absl flags; a program that is not an absl app (a
      # script, a test) has not parsed them, so they take their defaults.
      from absl import flags
      if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
      it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=self.num_workers))
    return iter(it_ds)

  def __next__(self) -> dict[str, np.ndarray]:
    if self.num_batches is not None and self._next_batch >= self.num_batches:
      raise StopIteration
    if self._it is None:
      self._it = self._grain_iterator(self._next_batch)
    batch = next(self._it)
    self._next_batch += 1
    return batch

  def __len__(self) -> int:
    if self.num_batches is None:
      raise TypeError("the training iterator is endless")
    return self.num_batches

  def __bool__(self) -> bool:  # an iterator is truthy, even an endless one without a len()
    return True

  def get_state(self) -> dict:
    return {"next_batch": self._next_batch, "stream": dict(self.identity)}

  def set_state(self, state: dict) -> None:
    if not isinstance(state, dict) or "next_batch" not in state or "stream" not in state:
      raise DataError(f"not a data iterator state: {state!r}")
    saved = state["stream"]
    changed = {k: (saved.get(k), v) for k, v in self.identity.items() if saved.get(k) != v}
    if changed:
      diff = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in sorted(changed.items()))
      raise DataError(f"cannot resume the data iterator: the stream it was saved from differs "
                      f"({diff}); resume with the saved settings or start a new run")
    next_batch = int(state["next_batch"])
    if next_batch < 0 or (self.num_batches is not None and next_batch > self.num_batches):
      raise DataError(f"data iterator state next_batch={next_batch} is out of range")
    self.close_inner()
    self._next_batch = next_batch

  def close_inner(self):
    if self._it is not None:
      self._it.close()
      self._it = None

  def start_prefetch(self) -> None:
    if self._it is None and (self.num_batches is None or self._next_batch < self.num_batches):
      self._it = self._grain_iterator(self._next_batch)
    if self._it is not None:
      self._it.start_prefetch()

  def close(self) -> None:
    self.close_inner()
    super().close()


def make_iterator(data_cfg, tok: tokenizer_lib.Tokenizer, split: str = "train", *,
                  batch_size: int, seq_len: int, seed: int = 0, process_index: int = 0,
                  process_count: int = 1) -> DataIterator:
  """Iterator of dicts of numpy arrays with `batch_size // process_count` rows of `seq_len`.

  Fields: tokens, targets, segment_ids, positions (int32) and loss_mask (float32); see
  `packing.py` for their meaning. split='train' is endless; split='eval' is one pass.
  """
  if split not in ("train", "eval"):
    raise DataError(f"split={split!r}; allowed: 'train', 'eval'")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise DataError(f"process_index={process_index} is not in [0, process_count="
                    f"{process_count})")
  if batch_size < 1 or batch_size % process_count:
    raise DataError(f"batch_size={batch_size} must be a positive multiple of the process count "
                    f"{process_count} (each process loads batch_size // process_count rows)")
  if seq_len < 1:
    raise DataError(f"seq_len={seq_len}; it must be >= 1")
  if int(data_cfg.num_workers) < 0:
    raise DataError(f"data.num_workers={data_cfg.num_workers}; it must be >= 0")
  train = split == "train"
  if data_cfg.format == "instructions":  # one example per row, or whole examples packed
    stream, identity = instructions.make_stream(data_cfg, tok, split, seq_len=seq_len, seed=seed,
                                                cache_root=cache_root(data_cfg))
    identity["batch_size"] = int(batch_size)
  else:
    docs = token_cache.tokenize_split(text_split(data_cfg, split), tok, cache_root(data_cfg))
    spec = packing.PackingSpec(seq_len, bool(data_cfg.pack), bool(data_cfg.add_bos),
                               bool(data_cfg.add_eos), tok.bos_id, tok.eos_id)
    shuffle = bool(data_cfg.shuffle) and train
    stream = packing.PackedStream(docs, spec, shuffle=shuffle, seed=seed, repeat=train)
    identity = {"split": split, "documents": docs.fingerprint,
                "seed": int(seed) if shuffle else 0, "batch_size": int(batch_size),
                "seq_len": int(seq_len), "pack": spec.pack, "add_bos": spec.add_bos,
                "add_eos": spec.add_eos, "shuffle": shuffle}
    log.info("%s data: %d documents, %d tokens, %d rows of %d per epoch", split, len(docs),
             stream.num_tokens, stream.rows_per_epoch, seq_len)
  num_batches = None if train else math.ceil(stream.rows_per_epoch / batch_size)
  return DataIterator(stream, global_batch=batch_size, process_index=process_index,
                      process_count=process_count, num_batches=num_batches,
                      num_workers=int(data_cfg.num_workers), identity=identity)
