"""Data: sources (stdlib / local files / TFDS), tokenizer at first run, packing, grain loader.

    tok = data.load_or_train_tokenizer(config.data, vocab_size=config.model.vocab_size)
    it = data.make_iterator(config.data, tok, split="train", batch_size=B, seq_len=T,
                            seed=config.seed, process_index=..., process_count=...)

Modules: `sources` (documents and splits), `text_builder` (local files as a TFDS ArrayRecord
dataset), `token_cache` (tokenized splits, memory-mapped), `packing` (rows with segment ids),
`pipeline` (the grain iterator); instruction data (`data.format="instructions"`):
`instruction_files` (JSON / JSONL records, checked), `instructions` (LLM-Adapters' templates,
tokenization, splits), `instruction_rows` (padded or packed example rows). The loader's names
are resolved on first use, so importing this package (or `DataError`) does not import TFDS or
grain.
"""
from llama_jax.core.errors import DataError

_LAZY = {
    "make_iterator": "pipeline", "load_or_train_tokenizer": "pipeline",
    "DataIterator": "pipeline", "text_split": "pipeline", "cache_root": "pipeline",
    "DataWarning": "sources", "PackedStream": "packing", "PackingSpec": "packing",
    "TokenizedDocs": "token_cache",
}

__all__ = ["DataError", *_LAZY]


def __getattr__(name):
  if name in _LAZY:
    import importlib
    module = importlib.import_module(f"llama_jax.data.{_LAZY[name]}")
    return getattr(module, name)
  raise AttributeError(f"module 'llama_jax.data' has no attribute {name!r}")
