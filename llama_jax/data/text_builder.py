"""Local text files (a glob, or the Python standard library) as a TFDS ArrayRecord dataset.

`prepare_local` writes the corpus once with a `tfds.core.GeneratorBasedBuilder` in the
ArrayRecord file format and reads it back with `as_data_source()` (random access). TFDS builds
and reads ArrayRecord without TensorFlow, which is not installed here: `Text` features are
stored as UTF-8 bytes and decoded by us.

The dataset has a `train` split and, when `data.heldout_fraction > 0`, a `heldout` split: a
deterministic subset of the documents chosen by a hash of each file's path relative to the
corpus root (`sources.heldout_mask`). Documents keep the sorted file order (TFDS shuffling is
disabled), each with its relative path as `path`.

The result is cached under `<cache_dir>/text/<fingerprint>/`, where the fingerprint covers the
file list with sizes and mtimes and the split settings: a second run with the same inputs
reuses it; touching, adding or removing a file rebuilds it. The dataset is built in a temporary
directory and renamed into place, so a failed or interrupted build leaves nothing behind, and
two processes building at once do not see each other's half-written files.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import warnings

import tensorflow_datasets as tfds

from llama_jax.core.errors import DataError
from llama_jax.data import sources

BUILDER_NAME = "llama_jax_text_files"
FORMAT_VERSION = 1  # bump when the layout written here changes, so old caches are not reused
MANIFEST = "manifest.json"

log = logging.getLogger(__name__)


class LlamaJaxTextFiles(tfds.core.GeneratorBasedBuilder):
  """TFDS builder: one example `{text, path}` per local file, in `train` and `heldout` splits."""

  VERSION = tfds.core.Version("1.0.0")

  # TFDS locates a builder's source file to find download checksums; this builder downloads
  # nothing, and the lookup needs the `importlib_resources` backport, which TFDS does not
  # install. None skips it.
  code_path = None

  def __init__(self, *, documents=(), heldout=frozenset(), **kwargs):
    self._documents = list(documents)  # (key, absolute path)
    self._heldout = frozenset(heldout)  # keys of held-out documents
    super().__init__(**kwargs)

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Local UTF-8 text files, one document per file (llama_jax).",
        features=tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                             "path": tfds.features.Text()}),
        disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = {"train": self._generate_examples(heldout=False)}
    if self._heldout:
      splits["heldout"] = self._generate_examples(heldout=True)
    return splits

  def _generate_examples(self, heldout: bool):
    for key, path in self._documents:
      if (key in self._heldout) != heldout:
        continue
      with open(path, "rb") as f:
        raw = f.read()
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError:
        raise DataError(f"{path} changed while the corpus was being prepared (it is no longer "
                        "UTF-8); run again") from None
      yield key, {"text": text, "path": key}


def local_corpus(data_cfg) -> sources.LocalCorpus:
  """The corpus `data.files` / `data.dataset` names (stdlib unless a glob is given)."""
  if data_cfg.files:
    return sources.glob_corpus(data_cfg.files)
  if data_cfg.dataset == "files":
    raise DataError("data.dataset='files' needs data.files, a glob of UTF-8 text files")
  if data_cfg.dataset != "stdlib":
    raise DataError(f"data.dataset={data_cfg.dataset!r} is not a local corpus")
  return sources.stdlib_corpus()


def fingerprint(corpus: sources.LocalCorpus, data_cfg) -> str:
  payload = json.dumps({
      "format": FORMAT_VERSION,
      "root": corpus.root,
      "files": sources.file_stats(corpus),
      "heldout_fraction": float(data_cfg.heldout_fraction),
      "max_documents": int(data_cfg.max_documents),
  })
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _build(corpus: sources.LocalCorpus, data_cfg, dest: str) -> None:
  scan = sources.scan_files(corpus, int(data_cfg.max_documents))
  keys = [key for key, _ in scan.documents]
  held = sources.heldout_mask(keys, float(data_cfg.heldout_fraction))
  heldout = {k for k, h in zip(keys, held) if h}
  parent = os.path.dirname(dest)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(dir=parent, prefix=f".tmp-{os.path.basename(dest)}-")
  try:
    log.info("Preparing %s: %d documents (%d held out) -> %s", corpus.description,
             len(keys), len(heldout), dest)
    builder = LlamaJaxTextFiles(documents=scan.documents, heldout=heldout, data_dir=tmp,
                                file_format="array_record")
    with _quiet_tfds():
      builder.download_and_prepare()
    manifest = {
        "corpus": corpus.description, "root": corpus.root, "documents": len(keys),
        "heldout": len(heldout), "skipped_non_utf8": scan.skipped_non_utf8,
        "empty": scan.empty, "builder_dir": os.path.relpath(builder.data_dir, tmp),
    }
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=1)
    try:
      os.rename(tmp, dest)
    except OSError:
      if not os.path.exists(os.path.join(dest, MANIFEST)):
        raise
      # Another process finished the same build first; its result is identical.
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


class _quiet_tfds:
  """Hides TFDS progress bars and its "Downloading and preparing dataset Unknown size ..."
  banners (printed to stdout; this module logs its own line) during a build, restoring the
  caller's settings after."""

  def __enter__(self):
    from tensorflow_datasets.core.utils import tqdm_utils
    self._was = getattr(tqdm_utils, "_active", True)
    tfds.display_progress_bar(False)
    self._stdout = contextlib.redirect_stdout(io.StringIO())
    self._stdout.__enter__()

  def __exit__(self, *exc):
    self._stdout.__exit__(*exc)
    tfds.display_progress_bar(self._was)


def prepare_local(data_cfg, cache_root: str) -> dict[str, sources.TextSplit]:
  """{'train': TextSplit, 'heldout': TextSplit (when heldout_fraction > 0)} of the local corpus."""
  corpus = local_corpus(data_cfg)
  fp = fingerprint(corpus, data_cfg)
  dest = os.path.join(cache_root, "text", fp)
  if not os.path.exists(os.path.join(dest, MANIFEST)):
    _build(corpus, data_cfg, dest)
  with open(os.path.join(dest, MANIFEST)) as f:
    manifest = json.load(f)
  if manifest["skipped_non_utf8"]:
    warnings.warn(f"{corpus.description}: {len(manifest['skipped_non_utf8'])} files that are not "
                  f"UTF-8 are left out (listed in {os.path.join(dest, MANIFEST)})",
                  sources.DataWarning, stacklevel=2)
  builder = tfds.builder_from_directory(os.path.join(dest, manifest["builder_dir"]))
  splits = {}
  for name, source in builder.as_data_source().items():
    where = f"{corpus.description} ({name} split, prepared in {dest})"
    splits[name] = sources.TextSplit(name, f"{fp}-{name}", len(source),
                                     sources.record_reader(source, "text", where))
  return splits
