"""Every configuration field with its default: the single source of defaults.

Recipes start from `get_config()` and override what their paper's table says; the trainer locks
the dict, so a key that is not defined here is an error. Not a runnable recipe by itself (it
has no data or model size worth training); see `tiny.py`.
"""
import ml_collections
from ml_collections import config_dict

from llama_jax.logical_axes import DEFAULT_RULES
from llama_jax.model_config import PRESETS


# Types of the ModelConfig/RopeConfig fields that may be None. A None in a ConfigDict cannot be
# overridden from the command line, so these become typed placeholders
# (`--config.model.rope.factor=16` then works on a config whose factor is unset).
_OPTIONAL_TYPES = {
    "n_kv_heads": int, "head_dim": int, "factor": float, "original_max_position_embeddings": int,
    "max_position_embeddings": int, "beta_fast": float, "beta_slow": float,
    "attention_factor": float, "mscale": float, "mscale_all_dim": float, "truncate": bool,
    "low_freq_factor": float, "high_freq_factor": float, "short_factor": tuple,
    "long_factor": tuple,
}


def _with_placeholders(fields: dict) -> dict:
  out = {}
  for key, value in fields.items():
    if isinstance(value, dict):
      out[key] = _with_placeholders(value)
    elif value is None and key in _OPTIONAL_TYPES:
      out[key] = config_dict.placeholder(_OPTIONAL_TYPES[key])
    elif isinstance(value, list):
      out[key] = tuple(value)
    else:
      out[key] = value
  return out


def model_fields(preset: str = "tiny", **overrides) -> dict:
  """All ModelConfig fields of a preset (with `overrides`), ready for `config.model.update`.

  `overrides` are ModelConfig fields; `rope=dict(rope_type=..., factor=...)` replaces the
  preset's RoPE record (fields not given take RopeConfig's defaults).
  """
  cfg = PRESETS[preset].replace(**overrides) if overrides else PRESETS[preset]
  fields = cfg.to_dict()
  # The RoPE record's max_position_embeddings mirrors the model's; leaving it unset lets
  # ModelConfig fill it, so `--config.model.max_position_embeddings=...` reaches RoPE too.
  fields["rope"]["max_position_embeddings"] = None
  return _with_placeholders(fields)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.steps = 1000
  c.batch_size = 8  # global, in sequences
  c.seq_len = 256
  c.grad_accum = 1  # micro-batches per step; batch_size must divide by it
  c.log_every = 10
  c.eval_every = 200
  c.eval_batches = 4
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.init_from = ""  # a converted checkpoint (python -m llama_jax.convert) to start from
  c.sample_prompt = "def "  # printed with its greedy continuation at the end of training
  c.sample_tokens = 48

  c.model = ml_collections.ConfigDict(model_fields("tiny"))

  c.optim = ml_collections.ConfigDict(dict(
      peak_lr=3e-4,
      warmup_steps=100,
      schedule="cosine",  # cosine | linear | constant (after the linear warmup)
      final_lr_fraction=0.1,  # cosine/linear decay ends at this fraction of peak
      b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.1,
      decay_exclude=("norm", "embed"),  # regexes on parameter paths left undecayed
      clip_norm=1.0,  # global-norm clipping; 0 disables
      trainable=".*",  # regex of trainable parameter paths; the rest are frozen
  ))

  c.data = ml_collections.ConfigDict(dict(
      dataset="stdlib",  # stdlib | files | a TFDS catalog name such as pg19 or c4
      files="",  # a glob of local UTF-8 text files; when set it overrides `dataset`
      tfds_data_dir="",  # where TFDS datasets live ('' = TFDS default)
      text_key="text",  # feature holding the text in TFDS datasets
      train_split="train",
      eval_split="",  # '' = hold out `heldout_fraction` of the training documents
      heldout_fraction=0.02,
      tokenizer="",  # a sentencepiece .model; '' = train one on the corpus (cached)
      tokenizer_vocab_size=0,  # for a trained tokenizer; 0 = model.vocab_size
      cache_dir="",  # prepared data and tokenizers; '' = ~/.cache/llama_jax
      pack=True,  # pack documents into rows with segment ids (no cross-document attention)
      add_bos=True,
      add_eos=True,
      shuffle=True,
      num_workers=0,  # grain worker processes (0 = in the main process)
      max_documents=0,  # cap on documents read (0 = all)
  ))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=DEFAULT_RULES))
  return c
