"""Data pipeline: sources, caches, packing isolation, determinism, per-process shards, resume.

Corpora are built in temporary directories from slices of the standard library's sources; the
packing tests use synthetic documents whose every token names its document and offset, so the
checks reconstruct provenance from the tokens alone, not from the packer's bookkeeping.
"""
import json
import os
import sysconfig
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import data
from llama_jax.attention import masks
from llama_jax.data import pipeline, sources, text_builder, token_cache
from llama_jax.data.packing import PackedStream, PackingSpec
from llama_jax.data.token_cache import TokenizedDocs
from llama_jax.data.tokenizer import DataError
from llama_jax.training import defaults as base

STDLIB = Path(sysconfig.get_paths()["stdlib"])
VOCAB = 384
T = 64
FIELDS = {"tokens": np.int32, "targets": np.int32, "segment_ids": np.int32,
          "positions": np.int32, "loss_mask": np.float32}


def make_cfg(**overrides):
  cfg = base.get_config().data
  cfg.update(overrides)
  return cfg


def write_corpus(root: Path, n: int = 16) -> list[Path]:
  """n text files from stdlib sources, from a few lines (< T tokens) to several rows each."""
  names = sorted(p for p in (STDLIB / "json").glob("*.py")) + \
      [STDLIB / f for f in ("textwrap.py", "string.py", "bisect.py", "heapq.py", "fnmatch.py",
                            "shlex.py", "glob.py", "keyword.py", "colorsys.py", "this.py")]
  root.mkdir(parents=True, exist_ok=True)
  paths = []
  for i in range(n):
    lines = names[i % len(names)].read_text(encoding="utf-8").splitlines(keepends=True)
    k = [2, 5, 40, 120, 9, 60, 3, 200][i % 8]
    p = root / f"doc_{i:02d}.txt"
    p.write_text(f"# document {i} ünï\n" + "".join(lines[i:i + k]), encoding="utf-8")
    paths.append(p)
  return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  """(config, tokenizer, file paths) of a 16-file corpus with its caches prepared."""
  root = tmp_path_factory.mktemp("data")
  paths = write_corpus(root / "corpus")
  cfg = make_cfg(files=str(root / "corpus" / "*.txt"), cache_dir=str(root / "cache"),
                 heldout_fraction=0.2)
  tok = data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  return cfg, tok, paths


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert sorted(x) == sorted(y)
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


# ----------------------------------------------------------------------------------- sources
def test_stdlib_corpus_is_sorted_sources_without_tests():
  a, b = sources.stdlib_corpus(), sources.stdlib_corpus()
  assert a == b and list(a.files) == sorted(a.files) and len(a.files) > 300
  rel = {os.path.relpath(f, a.root) for f in a.files}
  assert {"os.py", os.path.join("json", "__init__.py")} <= rel
  for f in rel:
    assert f.endswith(".py")
    assert not set(Path(f).parts) & {"site-packages", "test", "tests", "idle_test"}, f


def test_stdlib_default_end_to_end(tmp_path):
  """The default corpus (capped) goes through tokenizer training and the loader."""
  cfg = make_cfg(dataset="stdlib", max_documents=12, cache_dir=str(tmp_path))
  tok = data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  assert tok.vocab_size <= VOCAB
  batch = next(data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=0))
  assert set(batch) == set(FIELDS)
  for k, dtype in FIELDS.items():
    assert batch[k].shape == (4, T) and batch[k].dtype == dtype, k
  files = sources.stdlib_corpus().files[:40]
  stdlib_text = "".join(Path(f).read_text(encoding="utf-8") for f in files)
  row = batch["tokens"][0][batch["segment_ids"][0] == 1]
  piece = tok.decode(row).strip()
  assert len(piece) > 10 and piece[:10] in stdlib_text


# ----------------------------------------------------------------------------------- packing
def synthetic_docs(rng, n=23, max_len=150):
  """Raw docs whose token 1000*(d+1) + offset names (document d, raw offset)."""
  lengths = rng.integers(1, max_len, n)
  lengths[:3] = [1, T, 3 * T + 5]  # a one-token doc, an exact row, a doc over several rows
  return [1000 * (d + 1) + np.arange(n_) for d, n_ in enumerate(lengths)]


def full_doc(raw, spec):
  return [spec.bos_id] * spec.add_bos + list(raw) + [spec.eos_id] * spec.add_eos


def reconstruct(row, spec):
  """Per position: (document, offset in the full doc), read from token values; -1 = padding.

  Also checks, independently of the packer: each segment is a contiguous run of consecutive
  tokens of one document, positions count from 0 in each segment, padding is segment 0.
  """
  seg, tokens, targets = row["segment_ids"], row["tokens"], row["targets"]
  doc = np.full(len(seg), -1)
  off = np.full(len(seg), -1)
  for s in np.unique(seg[seg > 0]):
    idx = np.flatnonzero(seg == s)
    assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1)), "segment not contiguous"
    np.testing.assert_array_equal(row["positions"][idx], np.arange(len(idx)))
    toks = tokens[idx]
    real = np.flatnonzero(toks >= 1000)
    if len(real):
      d = toks[real[0]] // 1000 - 1
      first = toks[real[0]] % 1000 + spec.add_bos - real[0]
    elif toks[0] == spec.bos_id and len(toks) == 1:  # a lone BOS: its target names the doc
      d, first = targets[idx[0]] // 1000 - 1, 0
    else:  # a lone EOS ending a document begun in the previous row: nothing to attend to
      d, first = -2, -2
    doc[idx], off[idx] = d, first + np.arange(len(idx))
  assert np.all(seg[doc == -1] == 0) and np.all(tokens[seg == 0] == 0)
  return doc, off


def check_row(row, raw_docs, spec):
  doc, off = reconstruct(row, spec)
  for i in np.flatnonzero(doc >= 0):
    full = full_doc(raw_docs[doc[i]], spec)
    assert row["tokens"][i] == full[off[i]]
    has_next = off[i] + 1 < len(full)
    assert row["loss_mask"][i] == float(has_next)
    assert row["targets"][i] == (full[off[i] + 1] if has_next else 0)
  lone_eos = doc == -2
  assert np.all(row["loss_mask"][lone_eos] == 0) and np.all(row["tokens"][lone_eos] == spec.eos_id)
  assert np.all(row["loss_mask"][doc == -1] == 0)
  return doc


def assert_no_cross_document_attention(row, doc):
  """The model's own mask (masks.attention_mask) over the row's segment ids: every visible
  (query, key) pair lies in one piece of one document; padding sees only padding."""
  seg = jnp.asarray(row["segment_ids"])[None]
  visible = np.asarray(masks.attention_mask(T, T, seg, seg))[0]
  qi, kj = np.nonzero(visible)
  same_piece = row["segment_ids"][qi] == row["segment_ids"][kj]
  assert np.all(same_piece)
  real = (doc[qi] >= 0) & (doc[kj] >= 0)
  assert np.all(doc[qi][real] == doc[kj][real])
  assert np.all((doc[qi] == -1) == (doc[kj] == -1))


@pytest.mark.parametrize("pack", [True, False])
@pytest.mark.parametrize("bos_eos", [(True, True), (True, False), (False, False)])
def test_packing_isolation_targets_and_coverage(pack, bos_eos):
  rng = np.random.default_rng(0)
  raw = synthetic_docs(rng)
  spec = PackingSpec(T, pack=pack, add_bos=bos_eos[0], add_eos=bos_eos[1])
  stream = PackedStream(TokenizedDocs.from_lists(raw), spec, shuffle=True, seed=3, repeat=True)
  lengths = [len(full_doc(r, spec)) for r in raw]
  if pack:
    assert stream.rows_per_epoch == -(-sum(lengths) // T)
  else:
    assert stream.rows_per_epoch == sum(-(-n // T) for n in lengths)
  expected = sorted(t for r in raw for t in full_doc(r, spec))
  firsts = []
  for epoch in range(2):
    seen = []
    for g in range(epoch * stream.rows_per_epoch, (epoch + 1) * stream.rows_per_epoch):
      row = stream.row(g)
      assert {k: v.dtype for k, v in row.items()} == FIELDS
      doc = check_row(row, raw, spec)
      assert_no_cross_document_attention(row, doc)
      if not pack:
        assert row["segment_ids"].max() == 1 and row["segment_ids"][0] == 1
      seen.extend(row["tokens"][row["segment_ids"] > 0].tolist())
      firsts.append(int(row["tokens"][0]))
    assert sorted(seen) == expected  # each epoch: every token once, none dropped or repeated
  n = stream.rows_per_epoch
  assert firsts[:n] != firsts[n:]  # epochs are reshuffled


def test_isolation_check_catches_merged_segments():
  """The isolation check is not vacuous: a row whose documents share a segment id fails it."""
  raw = [1000 * (d + 1) + np.arange(20) for d in range(8)]
  spec = PackingSpec(T)
  row = PackedStream(TokenizedDocs.from_lists(raw), spec, shuffle=False, seed=0,
                     repeat=False).row(0)
  assert row["segment_ids"].max() >= 3
  doc = check_row(row, raw, spec)
  assert_no_cross_document_attention(row, doc)
  row["segment_ids"] = np.where(row["segment_ids"] > 0, 1, 0).astype(np.int32)
  with pytest.raises(AssertionError):
    assert_no_cross_document_attention(row, doc)


def test_single_epoch_stream_pads_after_the_end():
  raw = [1000 + np.arange(10)]
  stream = PackedStream(TokenizedDocs.from_lists(raw), PackingSpec(T), shuffle=False, seed=0,
                        repeat=False)
  assert stream.rows_per_epoch == 1
  row = stream.row(0)
  assert row["segment_ids"].tolist() == [1] * 12 + [0] * (T - 12)
  assert row["loss_mask"].sum() == 11
  for k, v in stream.row(1).items():
    assert not v.any(), k


# -------------------------------------------------------------------------- the loader: order
def test_same_seed_same_batches_other_seed_other_order(corpus):
  cfg, tok, _ = corpus
  make = lambda seed: data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T,
                                         seed=seed)
  a, b, c = take(make(0), 5), take(make(0), 5), take(make(1), 5)
  assert_batches_equal(a, b)
  assert not all(np.array_equal(x["tokens"], y["tokens"]) for x, y in zip(a, c))


def test_unshuffled_order_follows_the_documents(corpus):
  cfg, tok, _ = corpus
  cfg = make_cfg(**{**cfg.to_dict(), "shuffle": False})
  a = take(data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=0), 2)
  b = take(data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=7), 2)
  assert_batches_equal(a, b)  # no shuffle: the seed does not matter
  assert a[0]["tokens"][0, 0] == tok.bos_id and a[0]["positions"][0, 0] == 0


@pytest.mark.parametrize("count", [2, 4])
def test_process_shards_are_disjoint_parts_of_the_global_batch(corpus, count):
  cfg, tok, _ = corpus
  full = take(data.make_iterator(cfg, tok, split="train", batch_size=8, seq_len=T, seed=5), 4)
  shards = [take(data.make_iterator(cfg, tok, split="train", batch_size=8, seq_len=T, seed=5,
                                    process_index=p, process_count=count), 4)
            for p in range(count)]
  for step, batch in enumerate(full):
    for k in FIELDS:
      parts = [shards[p][step][k] for p in range(count)]
      assert all(part.shape == (8 // count, T) for part in parts)
      np.testing.assert_array_equal(np.concatenate(parts), batch[k])
    rows = {batch["tokens"][i].tobytes() for i in range(8)}
    assert len(rows) == 8  # distinct rows: no process duplicates another's


def test_batch_must_split_over_processes(corpus):
  cfg, tok, _ = corpus
  with pytest.raises(DataError, match="batch_size=6 must be a positive multiple.*4"):
    data.make_iterator(cfg, tok, split="train", batch_size=6, seq_len=T, process_index=0,
                       process_count=4)
  with pytest.raises(DataError, match="process_index=4"):
    data.make_iterator(cfg, tok, split="train", batch_size=8, seq_len=T, process_index=4,
                       process_count=4)


# ------------------------------------------------------------------------- the loader: resume
@pytest.mark.parametrize("where", ["mid_epoch", "epoch_boundary"])
def test_resume_equals_uninterrupted(corpus, where):
  cfg, tok, _ = corpus
  make = lambda: data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=2)
  rows_per_epoch = make().stream.rows_per_epoch
  stop = 3 if where == "mid_epoch" else rows_per_epoch // 4 - 1
  total = stop + 4
  if where == "epoch_boundary":  # the resumed batches run from epoch 0 into epoch 1
    assert stop * 4 < rows_per_epoch < total * 4
  straight = take(make(), total)
  first = make()
  take(first, stop)
  state = json.loads(json.dumps(first.get_state()))
  resumed = make()
  resumed.set_state(state)
  assert_batches_equal(take(resumed, total - stop), straight[stop:])
  # The interrupted iterator itself continues identically too.
  assert_batches_equal(take(first, total - stop), straight[stop:])


def test_grain_checkpoint_handler_round_trip(corpus, tmp_path):
  """The iterator is a grain DatasetIterator: grain's orbax handler saves and restores it."""
  import grain
  from etils import epath

  cfg, tok, _ = corpus
  make = lambda: data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=6)
  it = make()
  take(it, 2)
  grain.checkpoint.CheckpointHandler().save(epath.Path(tmp_path), item=it)
  expect = take(it, 2)
  restored = grain.checkpoint.CheckpointHandler().restore(epath.Path(tmp_path), item=make())
  assert_batches_equal(take(restored, 2), expect)


def test_resume_with_another_process_count(corpus):
  """The state is a global batch counter: 2 processes can resume what 1 process saved."""
  cfg, tok, _ = corpus
  one = data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=2)
  take(one, 2)
  state = one.get_state()
  expect = next(one)
  halves = []
  for p in range(2):
    it = data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=2,
                            process_index=p, process_count=2)
    it.set_state(state)
    halves.append(next(it)["tokens"])
  np.testing.assert_array_equal(np.concatenate(halves), expect["tokens"])


def test_resume_rejects_a_different_stream(corpus):
  cfg, tok, _ = corpus
  it = data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=2)
  take(it, 1)
  state = it.get_state()
  other = data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=3)
  with pytest.raises(DataError, match="seed: saved 2, now 3"):
    other.set_state(state)
  with pytest.raises(DataError, match="not a data iterator state"):
    other.set_state({"next_index": 3})


def test_grain_worker_processes_give_the_same_batches(corpus):
  cfg, tok, _ = corpus
  ref = take(data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=4), 3)
  cfg = make_cfg(**{**cfg.to_dict(), "num_workers": 1})
  it = data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T, seed=4)
  try:
    assert_batches_equal(take(it, 3), ref)
  finally:
    it.close()


# ---------------------------------------------------------------------------- eval / held out
def test_heldout_split_is_disjoint_deterministic_and_one_pass(corpus):
  cfg, tok, paths = corpus
  train = pipeline.text_split(cfg, "train")
  held = pipeline.text_split(cfg, "eval")
  train_texts = set(train.texts(np.arange(len(train))))
  held_texts = set(held.texts(np.arange(len(held))))
  all_texts = {p.read_text(encoding="utf-8") for p in paths}
  assert train_texts | held_texts == all_texts and not train_texts & held_texts
  assert 1 <= len(held_texts) <= 8
  it = data.make_iterator(cfg, tok, split="eval", batch_size=4, seq_len=T)
  batches = list(it)
  assert len(batches) == len(it) and batches
  assert_batches_equal(batches, list(data.make_iterator(cfg, tok, split="eval", batch_size=4,
                                                        seq_len=T)))
  # Every held-out token exactly once, in document order; nothing from training documents.
  held_ids = [tok.encode(t, bos=True, eos=True) for t in held.texts(np.arange(len(held)))]
  real = [b["segment_ids"] > 0 for b in batches]
  got = {k: np.concatenate([b[k][m] for b, m in zip(batches, real)]).tolist()
         for k in ("tokens", "targets", "loss_mask")}
  assert got["tokens"] == [i for ids in held_ids for i in ids]
  # Targets are the next token of the same document, also across row ends; none at a doc's end.
  assert got["targets"] == [i for ids in held_ids for i in ids[1:] + [0]]
  assert got["loss_mask"] == [m for ids in held_ids for m in [1.0] * (len(ids) - 1) + [0.0]]
  assert all(not b["loss_mask"][~m].any() for b, m in zip(batches, real))
  n_rows = -(-len(got["tokens"]) // T)  # one pass, packed: the last row alone is partial
  assert len(batches) == -(-n_rows // 4)
  tail = np.concatenate([b["segment_ids"] for b in batches])[n_rows:]
  assert not tail.any()  # the last batch is completed with all-padding rows


def test_eval_needs_heldout_documents(corpus):
  cfg, tok, _ = corpus
  cfg0 = make_cfg(**{**cfg.to_dict(), "heldout_fraction": 0.0})
  with pytest.raises(DataError, match="heldout_fraction > 0"):
    data.make_iterator(cfg0, tok, split="eval", batch_size=4, seq_len=T)
  bad = make_cfg(**{**cfg.to_dict(), "eval_split": "validation"})
  with pytest.raises(DataError, match="eval_split='validation'.*'heldout', 'train'"):
    data.make_iterator(bad, tok, split="eval", batch_size=4, seq_len=T)


# ------------------------------------------------------------------------------------- caches
def test_prepared_data_and_tokenizer_are_cached(corpus, monkeypatch):
  cfg, tok, paths = corpus
  def fail(*a, **k):
    raise AssertionError("rebuilt although cached")
  monkeypatch.setattr(text_builder, "_build", fail)
  monkeypatch.setattr(token_cache, "_build", fail)
  monkeypatch.setattr(pipeline.tokenizer_lib, "train_tokenizer", fail)
  again = data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  assert again.fingerprint == tok.fingerprint
  next(data.make_iterator(cfg, tok, split="train", batch_size=4, seq_len=T))
  # Changing a file's mtime changes the fingerprint: the corpus is prepared again.
  st = os.stat(paths[0])
  os.utime(paths[0], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  with pytest.raises(AssertionError, match="rebuilt"):
    pipeline.text_split(cfg, "train")


def test_tokenizer_settings_errors(corpus, tmp_path):
  cfg, tok, _ = corpus
  big = make_cfg(**{**cfg.to_dict(), "tokenizer_vocab_size": VOCAB + 1})
  with pytest.raises(DataError, match=f"tokenizer_vocab_size={VOCAB + 1} exceeds"):
    data.load_or_train_tokenizer(big, vocab_size=VOCAB)
  given = make_cfg(**{**cfg.to_dict(), "tokenizer": tok.path})
  assert data.load_or_train_tokenizer(given, vocab_size=VOCAB).fingerprint == tok.fingerprint
  with pytest.raises(DataError, match=f"Set --config.model.vocab_size={tok.vocab_size}"):
    data.load_or_train_tokenizer(given, vocab_size=tok.vocab_size - 1)


# ---------------------------------------------------------------------------------- bad input
def test_empty_corpus_names_the_glob(tmp_path):
  cache = tmp_path / "cache"
  cfg = make_cfg(files=str(tmp_path / "nothing" / "*.txt"), cache_dir=str(cache))
  with pytest.raises(DataError, match=r"data.files='.*nothing/\*.txt' matches no file"):
    data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "a.txt").write_text("")
  (tmp_path / "empty" / "b.txt").write_text("  \n\n")
  cfg = make_cfg(files=str(tmp_path / "empty" / "*.txt"), cache_dir=str(cache))
  with pytest.raises(DataError, match=r"empty/\*.txt.*no usable document.*2 empty"):
    data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  assert not cache.exists() or not any(cache.rglob("*.json"))  # nothing half-written


def test_non_utf8_file_is_skipped_with_a_warning(tmp_path):
  paths = write_corpus(tmp_path / "c", n=6)
  bad = tmp_path / "c" / "latin1.txt"
  bad.write_bytes("caf\xe9 cr\xe8me = 1\n".encode("latin-1") * 20)
  cfg = make_cfg(files=str(tmp_path / "c" / "*.txt"), cache_dir=str(tmp_path / "cache"))
  with pytest.warns(sources.DataWarning, match="latin1.txt: not UTF-8"):
    split = pipeline.text_split(cfg, "train")
  manifest = json.loads(next((tmp_path / "cache").rglob("manifest.json")).read_text())
  assert manifest["skipped_non_utf8"] == [str(bad)] and manifest["documents"] == len(paths)
  held = pipeline.text_split(cfg, "eval")
  assert len(split) + len(held) == len(paths)
  assert not any("cr" in t and "caf" in t for t in split.texts(np.arange(len(split))))


def test_all_files_non_utf8_is_an_error(tmp_path):
  (tmp_path / "c").mkdir()
  for name in ("a.txt", "b.txt"):
    (tmp_path / "c" / name).write_bytes(b"\xff\xfe bad bytes \x80\x81")
  cfg = make_cfg(files=str(tmp_path / "c" / "*.txt"), cache_dir=str(tmp_path / "cache"))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    with pytest.raises(DataError, match=r"c/\*.txt.*no usable document among 2 files "
                                        r"\(2 not UTF-8"):
      pipeline.text_split(cfg, "train")
  assert sum("not UTF-8" in str(w.message) for w in caught) == 2


def test_missing_tfds_dataset_says_how_to_prepare_it(tmp_path):
  cfg = make_cfg(dataset="pg19", tfds_data_dir=str(tmp_path), cache_dir=str(tmp_path / "c"))
  with pytest.raises(DataError, match=r"(?s)pg19.*not prepared.*tfds build pg19 --data_dir="
                                      r".*--file_format=array_record"):
    data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  cfg = make_cfg(dataset="no_such_corpus_xyz", tfds_data_dir=str(tmp_path))
  with pytest.raises(DataError, match="no prepared TFDS dataset of that name"):
    pipeline.text_split(cfg, "train")


# ------------------------------------------------------------------------------ TFDS catalog
@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
  """A TFDS dataset prepared as ArrayRecord (as `tfds build --file_format=array_record`)."""
  import tensorflow_datasets as tfds

  texts = {split: [(STDLIB / f).read_text(encoding="utf-8")[:3000 + 500 * i]
                   for i, f in enumerate(files)]
           for split, files in (("train", ["bisect.py", "heapq.py", "string.py", "textwrap.py",
                                           "glob.py", "fnmatch.py", "shlex.py", "keyword.py"]),
                                ("validation", ["colorsys.py", "this.py"]))}

  class LlamaJaxTestCorpus(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    code_path = None  # built from this test, not from a catalog module

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"content": tfds.features.Text()}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
      return {s: self._generate_examples(s) for s in texts}

    def _generate_examples(self, split):
      for i, t in enumerate(texts[split]):
        yield i, {"content": t}

  root = tmp_path_factory.mktemp("tfds")
  LlamaJaxTestCorpus(data_dir=str(root), file_format="array_record").download_and_prepare()
  return root, texts


def test_tfds_catalog_dataset_by_name(tfds_dir, tmp_path):
  root, texts = tfds_dir
  cfg = make_cfg(dataset="llama_jax_test_corpus", tfds_data_dir=str(root), text_key="content",
                 eval_split="validation", cache_dir=str(tmp_path))
  tok = data.load_or_train_tokenizer(cfg, vocab_size=VOCAB)
  train = pipeline.text_split(cfg, "train")
  assert train.texts(np.arange(len(train))) == texts["train"]
  ev = list(data.make_iterator(cfg, tok, split="eval", batch_size=2, seq_len=T))
  got = np.concatenate([b["tokens"][b["segment_ids"] > 0] for b in ev]).tolist()
  assert got == [i for t in texts["validation"] for i in tok.encode(t, bos=True, eos=True)]
  next(data.make_iterator(cfg, tok, split="train", batch_size=2, seq_len=T, seed=0))
  # No eval_split: documents of the train split are held out by hash instead.
  cfg_h = make_cfg(**{**cfg.to_dict(), "eval_split": "", "heldout_fraction": 0.25})
  tr, he = pipeline.text_split(cfg_h, "train"), pipeline.text_split(cfg_h, "eval")
  tr_t, he_t = tr.texts(np.arange(len(tr))), he.texts(np.arange(len(he)))
  assert sorted(tr_t + he_t) == sorted(texts["train"]) and he_t and not set(tr_t) & set(he_t)


def test_tfds_bad_split_and_text_key(tfds_dir):
  root, _ = tfds_dir
  cfg = make_cfg(dataset="llama_jax_test_corpus", tfds_data_dir=str(root), text_key="text")
  with pytest.raises(DataError, match=r"no feature 'text' \(they have \['content'\]\)"):
    pipeline.text_split(cfg, "train").texts([0])
  cfg = make_cfg(dataset="llama_jax_test_corpus", tfds_data_dir=str(root), eval_split="test")
  with pytest.raises(DataError, match=r"no split 'test'; its splits are \['train', 'validation'"):
    pipeline.text_split(cfg, "eval")
