"""Every training configuration field with its default: the single source of defaults.

Recipes (`configs/*.py`) start from `get_config()` (or the two recipe families below) and
override what their paper's table says; the trainer locks the dict, so a key that is not
defined here is an error (`unknown_keys`). Not a runnable recipe by itself; see `configs/tiny.py`.

Each recipe module also states `DEVICES`, the accelerator count its mesh and batch are sized
for; tests validate every recipe against that many hypothetical devices.
"""
import dataclasses
import math
from collections.abc import Mapping

import ml_collections
from ml_collections import config_dict

from llama_jax import adapters
from llama_jax.core.errors import ConfigError
from llama_jax.model.config import PRESETS
from llama_jax.parallel.logical_axes import DEFAULT_RULES
from llama_jax.training import augment

# Types of the ModelConfig/RopeConfig fields that may be None. A None in a ConfigDict cannot be
# overridden from the command line, so these become typed placeholders
# (`--config.model.rope.factor=16` then works on a config whose factor is unset).
_OPTIONAL_TYPES = {
    "n_kv_heads": int, "head_dim": int, "factor": float, "original_max_position_embeddings": int,
    "max_position_embeddings": int, "beta_fast": float, "beta_slow": float,
    "attention_factor": float, "mscale": float, "mscale_all_dim": float, "truncate": bool,
    "low_freq_factor": float, "high_freq_factor": float, "short_factor": tuple,
    "long_factor": tuple, "self_extend_window": int, "self_extend_group": int,
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


def _adapter_options(cls) -> ml_collections.ConfigDict:
  """An adapter's options with their defaults. A field typed as a union (series' `scaling:
  float | str`, a number or 'learned') takes any value, also from the command line
  (`--config.adapter.series.scaling=learned` or `=0.5`); the adapter checks the values."""
  out = {}
  for f in dataclasses.fields(cls):
    if "|" in str(f.type):
      out[f.name] = config_dict.FieldReference(f.default, field_type=object)
    else:
      out[f.name] = f.default
  return ml_collections.ConfigDict(out)


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


def set_rope(config: ml_collections.ConfigDict, changes: Mapping) -> None:
  """Applies RoPE `changes` (HF field names, e.g. a search's rope.json) to config.model.rope,
  with `rope.config.apply_overrides`' rule: a new rope_type starts from that type's defaults."""
  from llama_jax.rope.config import FIELDS, RopeConfig, apply_overrides
  rope = config.model.rope
  current = RopeConfig.from_dict({k: rope[k] for k in FIELDS if rope.get(k) is not None})
  new = apply_overrides(current, dict(changes))
  for name in FIELDS:
    if name != "max_position_embeddings":  # mirrors model.max_position_embeddings
      value = getattr(new, name)
      rope[name] = tuple(value) if isinstance(value, (list, tuple)) else value


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
  # An HF export (config.json + safetensors + tokenizer) in <workdir>/export/step_<N> every this
  # many steps and at the end; 0 = never (`python -m llama_jax.convert` exports any checkpoint).
  c.export_every = 0
  # Weights to start from when the workdir has no checkpoint (the optimizer starts fresh): a
  # converted checkpoint (python -m llama_jax.convert) or another run's workdir (its latest).
  c.init_from = ""
  c.sample_prompt = "def "  # printed with its greedy continuation at the end of training
  c.sample_tokens = 48

  c.model = model_fields("tiny")

  # Evaluations during training: name -> dict(type=<a registered evaluation>, every=N, options);
  # llama_jax/evals/ lists the types and their options. Metrics are logged as <name>_<metric>.
  # The held-out loss ("eval": eval_loss, eval_perplexity) follows eval_every and eval_batches.
  c.evals = ml_collections.ConfigDict({"eval": ml_collections.ConfigDict(dict(
      type="heldout", every=c.get_ref("eval_every"), batches=c.get_ref("eval_batches")))})
  # A batch augmentation inside the train step (llama_jax/training/augment/): its name, and the
  # options of each registered one under augment.<name>.<option>. '' = none.
  c.augment = ml_collections.ConfigDict(
      {"name": "", **{a.name: ml_collections.ConfigDict(dict(a.options))
                      for a in augment.registry.AUGMENTATIONS.entries()}})

  # A PEFT adapter installed on the model (llama_jax/adapters/): its name, and the options of
  # each registered one under adapter.<name>.<option>. '' = none (every parameter of the model
  # trains per optim.trainable). With an adapter only its parameters train and are
  # checkpointed; the base comes from init_from (or the seed) at every start.
  c.adapter = ml_collections.ConfigDict(
      {"name": "", **{a.name: _adapter_options(a) for a in adapters.registry.ADAPTERS.entries()}})

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
      format="text",  # text (documents, packed) | instructions (examples; data.instructions)
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
      # format="instructions": LLM-Adapters' templates and tokenization (data/instructions.py)
      instructions=ml_collections.ConfigDict(dict(
          train_file="",  # JSON array or JSON lines of {instruction, input, output}
          eval_file="",  # held-out examples from a file; '' = held out from train_file
          heldout_examples=0,  # examples of train_file held out (LLM-Adapters' val_set_size)
          split_seed=42,  # seed of that held-out permutation (theirs: 42)
          cutoff_len=256,  # tokens per example, BOS/EOS included (0 = seq_len)
          train_on_inputs=True,  # loss on the prompt too (their default); False: response only
      )),
  ))

  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1, sequence=1))
  c.sharding = ml_collections.ConfigDict(dict(rules=DEFAULT_RULES))
  return c


# ------------------------------------------------------------------------------ families
LLAMA_BATCH_TOKENS = 4 * 2**20  # LLaMA §2.2 / Llama 2 Table 1: 4M tokens per batch


def llama_pretraining(preset: str, peak_lr: float, tokens: float, seq_len: int,
                      adam_eps: float = 1e-8) -> ml_collections.ConfigDict:
  """LLaMA-style pretraining from scratch (Touvron et al. 2023, §2.2; Llama 2 §2.2).

  AdamW b=(0.9, 0.95), weight decay 0.1, clipping 1.0, 2000 warmup steps, cosine decay to 10%
  of the peak, 4M-token batches; `tokens` sets the number of steps. bf16 compute with float32
  master weights, full remat, the best attention kernel of the backend, pure FSDP over all
  devices. Data: TFDS C4 (the paper's mixture is not public; C4 is its second-largest part), a
  32k LLaMA-style BPE tokenizer trained on it at the first run.
  """
  c = get_config()
  c.model = model_fields(preset, dtype="bfloat16", attention="auto", remat="full")
  c.seq_len = seq_len
  c.batch_size = LLAMA_BATCH_TOKENS // seq_len
  c.steps = math.ceil(tokens / (c.batch_size * seq_len))
  c.optim.update(dict(peak_lr=peak_lr, warmup_steps=2000, schedule="cosine",
                      final_lr_fraction=0.1, b1=0.9, b2=0.95, eps=adam_eps, weight_decay=0.1,
                      clip_norm=1.0))
  c.data.update(dict(dataset="c4/en", text_key="text", eval_split="validation"))
  c.log_every = 50
  c.eval_every = 2000
  c.eval_batches = 10
  c.checkpoint_every = 1000
  c.sample_prompt = "The capital of France is"
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, sequence=1))
  return c


YARN_ORIGINAL_LENGTH = 4096  # Llama 2's pretraining context


def yarn_extension(preset: str, factor: int, steps: int, init_from: str, tokenizer: str,
                   seed: int = 0) -> ml_collections.ConfigDict:
  """YaRN context extension of a converted Llama 2 (Peng et al. 2023, §4.1 and App. B.4).

  rope_type yarn with scale s=`factor` over the original 4096 positions (beta_fast 32,
  beta_slow 1, temperature 0.1 ln s + 1), max_position_embeddings 4096·s; AdamW b=(0.9, 0.95),
  no weight decay, lr 2e-5 with 20 linear warmup steps then linear decay to 0 at the last step
  (the paper's DeepSpeed WarmupDecayLR schedule), clipping 1.0; global batch 64 sequences of
  64k tokens from PG19 (documents packed with BOS/EOS; attention stays within a book);
  bf16 compute, chunked attention, full remat, FSDP over all devices, 8 micro-batches.
  """
  c = get_config()
  c.model = model_fields(
      preset, max_position_embeddings=YARN_ORIGINAL_LENGTH * factor, dtype="bfloat16",
      attention="chunked", remat="full",
      rope=dict(rope_type="yarn", rope_theta=10000.0, factor=float(factor),
                original_max_position_embeddings=YARN_ORIGINAL_LENGTH, beta_fast=32.0,
                beta_slow=1.0))
  c.seed = seed
  c.steps = steps
  c.seq_len = 65536
  c.batch_size = 64
  c.grad_accum = 8
  c.init_from = init_from
  c.optim.update(dict(peak_lr=2e-5, warmup_steps=20, schedule="linear", final_lr_fraction=0.0,
                      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.0, clip_norm=1.0))
  c.data.update(dict(dataset="pg19", text_key="book_text", eval_split="validation",
                     tokenizer=tokenizer))
  c.log_every = 1
  c.eval_every = 100
  c.eval_batches = 1
  c.checkpoint_every = 50
  c.sample_prompt = "It was the best of times,"
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, sequence=1))
  return c


E2LLM_WINDOW = 4096  # L: Llama 2's pretraining context, the window E²-LLM trains and scales in


def e2llm_extension(preset: str, init_from: str, tokenizer: str, g_max: int = 20,
                    seed: int = 0) -> ml_collections.ConfigDict:
  """E²-LLM on Llama 2 (Liu, Bai et al. 2024, arXiv 2401.06951 v3, §5.1 and Alg. 1).

  Full fine-tuning at R = 4k (the §4.2 examples and Table 3's "training context window 4k")
  with the `e2llm` augmentation: one (g, t) draw per iteration, g ~ U{1..g_max} (20: Table 5),
  t ~ U{0..g·4096 - R} after 4 sink tokens; plain RoPE over L = 4096 positions, so the weights
  serve any window with g = L_eval / 4096 at inference. AdamW b=(0.9, 0.95), lr 1e-5, 30,000
  steps, global batch 16. The paper states no schedule, warmup or weight decay: constant lr,
  no warmup, no weight decay, clipping 1.0 here. Data: TFDS `scientific_papers/arxiv` (the
  arXiv part of its long-document summarisation source, Cohan et al. 2018); its Pile and
  ShareGPT parts are not in TFDS. bf16 compute, full remat, FSDP over all devices. A passkey
  evaluation at 4k/16k/32k with g chosen from the length runs every 5,000 steps.
  """
  c = get_config()
  c.model = model_fields(preset, max_position_embeddings=E2LLM_WINDOW, dtype="bfloat16",
                         attention="auto", remat="full")
  c.seed = seed
  c.steps = 30000
  c.seq_len = 4096
  c.batch_size = 16
  c.init_from = init_from
  c.optim.update(dict(peak_lr=1e-5, warmup_steps=0, schedule="constant", b1=0.9, b2=0.95,
                      eps=1e-8, weight_decay=0.0, clip_norm=1.0))
  c.augment.name = "e2llm"
  c.augment.e2llm.update(dict(g_max=g_max, window=E2LLM_WINDOW, n_sink=4, per="step"))
  c.data.update(dict(dataset="scientific_papers/arxiv", text_key="article",
                     eval_split="validation", tokenizer=tokenizer))
  c.evals.passkey = ml_collections.ConfigDict(dict(
      type="passkey", every=5000, lengths=(4096, 16384, 32768), depths=(0.0, 0.5, 1.0),
      trials=5, e2llm_window=E2LLM_WINDOW))
  c.log_every = 10
  c.eval_every = 1000
  c.eval_batches = 8
  c.checkpoint_every = 1000
  c.sample_prompt = "The capital of France is"
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, sequence=1))
  return c


def pose_extension(init_from: str, tokenizer: str, target: int = 16384,
                   original: int = 2048) -> ml_collections.ConfigDict:
  """PoSE on LLaMA-7B (Zhu et al. 2024, arXiv 2309.10400, §4.1; the authors' training script).

  Train at L_c = 2048 on rows whose positions skip into a target window L_t (`pose`
  augmentation: two chunks, r1 ~ U{1..1024}, u ~ U{0..L_t - 2048}), with linear RoPE scaling
  s = L_t / 2048 and max_position_embeddings L_t. 1,000 steps of 64 sequences, lr 2e-5 with 10
  warmup steps then linear decay to 0 (DeepSpeed WarmupDecayLR), and the HF Trainer defaults
  the script leaves: AdamW b=(0.9, 0.999), eps 1e-8, no weight decay, clipping 1.0. Data: TFDS
  `pg19` documents unpacked (one document chunk per row, as the paper's examples) in place of
  its Pile split (documents >= 2,048 tokens), which is not in TFDS. bf16 compute (the paper:
  fp16 on V100), full remat, FSDP over all devices.
  """
  c = get_config()
  factor = target / original
  c.model = model_fields(
      "llama_7b", max_position_embeddings=target, dtype="bfloat16", attention="auto",
      remat="full", rope=dict(rope_type="linear", rope_theta=10000.0, factor=float(factor)))
  c.steps = 1000
  c.seq_len = original
  c.batch_size = 64
  c.init_from = init_from
  c.optim.update(dict(peak_lr=2e-5, warmup_steps=10, schedule="linear", final_lr_fraction=0.0,
                      b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, clip_norm=1.0))
  c.augment.name = "pose"
  c.augment.pose.target_length = target
  c.data.update(dict(dataset="pg19", text_key="book_text", eval_split="validation",
                     tokenizer=tokenizer, pack=False))
  c.evals.passkey = ml_collections.ConfigDict(dict(
      type="passkey", every=500, lengths=(original, target // 2, target), depths=(0.0, 0.5, 1.0),
      trials=5))
  c.log_every = 5
  c.eval_every = 50
  c.eval_batches = 4
  c.checkpoint_every = 100
  c.sample_prompt = "It was the best of times,"
  c.mesh.update(dict(data=1, fsdp=-1, tensor=1, sequence=1))
  return c


def recipe_options(arg: str | None, **types: type) -> dict:
  """A recipe's argument, the text after ':' in `--config=configs/x.py:g_max=10,seed=1`
  (ml_collections passes it to `get_config`), as {name: value} of the allowed `types`."""
  out = {}
  allowed = ", ".join(f"{k}=<{t.__name__}>" for k, t in types.items())
  for part in (arg or "").split(","):
    if not part.strip():
      continue
    key, sep, value = (s.strip() for s in part.partition("="))
    if not sep or key not in types:
      raise ConfigError(f"recipe argument {part.strip()!r}; allowed: {allowed} (comma-separated)")
    try:
      out[key] = types[key](value)
    except ValueError:
      raise ConfigError(f"recipe argument {key}={value!r} is not a {types[key].__name__}") \
          from None
  return out


# ------------------------------------------------------------------------------ checking
def _is_dict(v) -> bool:
  return isinstance(v, (Mapping, ml_collections.ConfigDict))


# Sub-dicts whose keys are checked by their owner: the model record by ModelConfig, evaluations
# by their registered type's options (recipes add entries).
_CHECKED_ELSEWHERE = ("model", "evals")


def unknown_keys(got: Mapping, want: Mapping | None = None, prefix: str = "") -> list[str]:
  """Dotted names of keys in `got` that `want` (default: `get_config()`) does not define,
  recursing into sub-dicts (except those `_CHECKED_ELSEWHERE`)."""
  want = get_config() if want is None else want
  out = []
  for key in got.keys():
    name = f"{prefix}{key}"
    if key not in want:
      out.append(name)
    elif _is_dict(want[key]) and _is_dict(got[key]) and key not in _CHECKED_ELSEWHERE:
      out.extend(unknown_keys(got[key], want[key], name + "."))
  return out
