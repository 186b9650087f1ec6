"""The tokenizer files of an HF checkpoint directory, so `transformers` loads the export whole.

An HF LLaMA directory carries its SentencePiece model as `tokenizer.model` next to the files
`AutoTokenizer` and `generate` read:

  tokenizer_config.json     the tokenizer class (LlamaTokenizer), its special tokens, that BOS
                            is added and EOS is not, the context length
  special_tokens_map.json   the special tokens again (older transformers read them here)
  generation_config.json    bos/eos ids for `model.generate` and pipelines

transformers builds its tokenizer from `tokenizer.model` (with sentencepiece installed), so the
ids are SentencePiece's for ordinary text. One known difference is HF's, for every LLaMA
tokenizer: text that *starts* with whitespace is split differently (HF's Metaspace step does
not split on the leading spaces the way SentencePiece does).

`find_tokenizer` locates the tokenizer of a conversion source (an HF or Meta directory keeps
one inside, Meta's release also one level up).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from llama_jax.core.errors import DataError

TOKENIZER_FILE = "tokenizer.model"
FILES = (TOKENIZER_FILE, "tokenizer_config.json", "special_tokens_map.json",
         "generation_config.json")


def find_tokenizer(src: str | os.PathLike, src_format: str) -> str | None:
  """The tokenizer.model that belongs to a conversion source, or None."""
  src = Path(os.path.expanduser(os.fspath(src)))
  candidates = [src / TOKENIZER_FILE]
  if src_format == "meta":  # Meta's release keeps one tokenizer next to the model folders
    candidates.append(src.parent / TOKENIZER_FILE)
  return next((str(c) for c in candidates if c.is_file()), None)


def write_tokenizer(directory: str | os.PathLike, tokenizer_file: str | os.PathLike,
                    cfg) -> list[Path]:
  """Copies `tokenizer_file` into `directory` with the config files transformers reads; checks
  that it fits the model (`cfg`: its vocab_size and BOS/EOS ids). Returns the files written."""
  from llama_jax.data import tokenizer as tokenizer_lib
  tok = tokenizer_lib.Tokenizer(tokenizer_file)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size, bos_id=cfg.bos_id, eos_id=cfg.eos_id)
  directory = Path(directory)

  def piece(token_id: int) -> str | None:
    return tok.id_to_piece(token_id) if 0 <= token_id < tok.vocab_size else None

  special = {"bos_token": piece(tok.bos_id), "eos_token": piece(tok.eos_id),
             "unk_token": piece(tok.unk_id)}
  if special["bos_token"] is None or special["eos_token"] is None:
    raise DataError(f"tokenizer {tokenizer_file} has no BOS or EOS token; an HF LLaMA needs both")
  config = {
      "tokenizer_class": "LlamaTokenizer",
      **special,
      "pad_token": None,
      "add_bos_token": True,
      "add_eos_token": False,
      "clean_up_tokenization_spaces": False,
      "legacy": False,
      "model_max_length": int(cfg.max_position_embeddings),
      "sp_model_kwargs": {},
  }
  generation = {"bos_token_id": int(cfg.bos_id), "eos_token_id": int(cfg.eos_id),
                "do_sample": False}
  shutil.copyfile(os.path.expanduser(os.fspath(tokenizer_file)), directory / TOKENIZER_FILE)
  written = [directory / TOKENIZER_FILE]
  for name, data in (("tokenizer_config.json", config), ("special_tokens_map.json", special),
                     ("generation_config.json", generation)):
    (directory / name).write_text(json.dumps(data, indent=2) + "\n")
    written.append(directory / name)
  return written
