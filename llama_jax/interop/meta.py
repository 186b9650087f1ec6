"""Meta reference checkpoints (`params.json` + `consolidated.NN.pth`) → llama_jax parameters.

The LLaMA 1/2/3 releases save one file per model-parallel rank (7B: 1, 13B: 2, 33B: 4, 65B/70B:
8), each holding a slice of every parallel weight (fairscale layers):
- column-parallel, output features split — wq, wk, wv, w1, w3, output: concatenated on dim 0;
- row-parallel, input features split — wo, w2: concatenated on dim 1;
- tok_embeddings (ParallelEmbedding splits the embedding dim): concatenated on dim 1;
- norms: replicated (shard 0's copy is used). `rope.freqs` buffers are ignored.

Names then map onto HF's (wq→q_proj, w1→gate_proj, w3→up_proj, w2→down_proj, output→lm_head,
...) and the HF→llama_jax layout of `interop/hf_layout.py` takes over.

RoPE layout: Meta rotates adjacent feature pairs (x_2i, x_2i+1) of each head; llama_jax, like
HF, pairs x_i with x_{i+head_dim/2}. So within every head, output row 2i+p of Meta's wq/wk becomes
row p·head_dim/2 + i (wq with n_heads heads, wk with n_kv_heads). q and k are permuted alike, so
attention scores are unchanged; wv and wo are not permuted.

Shards are read with `torch.load(mmap=True, weights_only=True)`, one tensor at a time. Pages
read through a mapping stay resident until it is unmapped, so the mappings are dropped and
re-opened after every `_REMAP_BYTES` read: peak memory is the model plus a bounded window.
"""
from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path

import numpy as np

from llama_jax.checkpoints.converted import CheckpointError, np_dtype
from llama_jax.interop import hf_layout as weights
from llama_jax.model.config import ModelConfig, llama_ffn_dim
from llama_jax.rope.config import RopeConfig

PARAMS = "params.json"
_REMAP_BYTES = 512 * 2**20
_PARAMS_KEYS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
                "ffn_dim_multiplier", "norm_eps", "rope_theta", "max_seq_len", "use_scaled_rope",
                "rope_scaling_factor", "rope_high_freq_factor", "max_batch_size")
_IGNORED = {"rope.freqs"}
# HF suffix -> (Meta name, concatenation axis or None if replicated, permute with which heads).
_LAYER = {
    "self_attn.q_proj.weight": ("attention.wq.weight", 0, "n_heads"),
    "self_attn.k_proj.weight": ("attention.wk.weight", 0, "n_kv_heads"),
    "self_attn.v_proj.weight": ("attention.wv.weight", 0, None),
    "self_attn.o_proj.weight": ("attention.wo.weight", 1, None),
    "mlp.gate_proj.weight": ("feed_forward.w1.weight", 0, None),
    "mlp.up_proj.weight": ("feed_forward.w3.weight", 0, None),
    "mlp.down_proj.weight": ("feed_forward.w2.weight", 1, None),
    "input_layernorm.weight": ("attention_norm.weight", None, None),
    "post_attention_layernorm.weight": ("ffn_norm.weight", None, None),
}
_GLOBAL = {
    "model.embed_tokens.weight": ("tok_embeddings.weight", 1, None),
    "model.norm.weight": ("norm.weight", None, None),
    "lm_head.weight": ("output.weight", 0, None),
}


def meta_name(hf_name: str) -> tuple[str, int | None, str | None]:
  """(Meta tensor name, concatenation axis, heads field for the RoPE permutation) of an HF name."""
  if hf_name in _GLOBAL:
    return _GLOBAL[hf_name]
  m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", hf_name)
  name, axis, heads = _LAYER[m.group(2)]
  return f"layers.{m.group(1)}.{name}", axis, heads


def interleaved_to_half(w: np.ndarray, n_heads: int) -> np.ndarray:
  """Rows of a Meta wq/wk [n_heads*hd, dim] reordered for rotate-half RoPE (per head: 2i+p →
  p*hd/2+i)."""
  rows, dim = w.shape
  hd = rows // n_heads
  return w.reshape(n_heads, hd // 2, 2, dim).transpose(0, 2, 1, 3).reshape(rows, dim)


def shard_files(src: Path) -> list[Path]:
  files = sorted(src.glob("consolidated.*.pth"))
  if not files:
    raise CheckpointError(f"no consolidated.*.pth files in {src}")
  ranks = []
  for f in files:
    m = re.fullmatch(r"consolidated\.(\d+)\.pth", f.name)
    if not m:
      raise CheckpointError(f"unexpected shard file name {f.name} (want consolidated.NN.pth)")
    ranks.append(int(m.group(1)))
  missing = sorted(set(range(max(ranks) + 1)) - set(ranks))
  if missing:
    raise CheckpointError(f"missing shard file(s) {[f'consolidated.{r:02d}.pth' for r in missing]} "
                          f"in {src}")
  return [src / f"consolidated.{r:02d}.pth" for r in sorted(ranks)]


def _torch_to_numpy(t) -> np.ndarray:
  import torch
  if t.dtype == torch.bfloat16:  # NumPy has no bfloat16; reinterpret the bits
    return t.contiguous().view(torch.int16).numpy().view(np_dtype("bfloat16"))
  return t.numpy()


class _Shards:
  """The model-parallel shards, mapped lazily and re-mapped every `_REMAP_BYTES` read."""

  def __init__(self, files: list[Path]):
    self.files = files
    self._loaded: list[dict] | None = None
    self._read = 0

  def _load(self) -> list[dict]:
    import torch
    if self._loaded is None:
      self._loaded = []
      for f in self.files:
        try:
          self._loaded.append(torch.load(f, map_location="cpu", mmap=True, weights_only=True))
        except Exception as e:  # zip/pickle errors of a truncated or foreign file
          self._loaded = None
          raise CheckpointError(f"shard {f} cannot be read (truncated or corrupt?): {e}") from e
      self._read = 0
    return self._loaded

  def keys(self) -> list[set[str]]:
    return [set(sd) for sd in self._load()]

  def shape(self, rank: int, name: str) -> tuple[int, ...]:
    return tuple(self._load()[rank][name].shape)

  def first(self, name: str):
    return self._load()[0][name]

  def get(self, name: str, axis: int | None) -> np.ndarray:
    """The full tensor: shard 0's copy if replicated, else the shards concatenated on `axis`."""
    import torch
    shards = self._load()
    if axis is None:
      t = shards[0][name].clone()
    else:
      t = torch.cat([sd[name] for sd in shards], dim=axis)
    self._read += t.numel() * t.element_size()
    out = _torch_to_numpy(t)
    del t
    if self._read > _REMAP_BYTES:
      self._loaded = None  # unmap: drops the pages read so far from this process
      gc.collect()
    return out


def read_params_json(src: Path, shards: _Shards, max_position_embeddings: int | None,
                     **overrides) -> ModelConfig:
  file = src / PARAMS
  if not file.is_file():
    raise CheckpointError(f"{file} not found: a Meta checkpoint directory needs params.json")
  try:
    p = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{file} is not valid JSON: {e}") from e
  unknown = sorted(set(p) - set(_PARAMS_KEYS))
  if unknown:
    raise CheckpointError(f"{file}: unknown field(s) {unknown}; known: {list(_PARAMS_KEYS)}")
  for key in ("dim", "n_layers", "n_heads"):
    if key not in p:
      raise CheckpointError(f"{file}: required field {key!r} is missing")
  dim = int(p["dim"])
  vocab = int(p.get("vocab_size", -1))
  if vocab <= 0:  # LLaMA 1 writes -1: the tokenizer decides; read it off the embedding
    vocab = shards.shape(0, "tok_embeddings.weight")[0]
  max_len = max_position_embeddings if max_position_embeddings is not None else p.get("max_seq_len")
  if max_len is None:
    raise CheckpointError(
        f"{file} has no max_seq_len; give the model's context length explicitly "
        "(--max_position_embeddings: 2048 for LLaMA 1, 4096 for Llama 2, 131072 for Llama 3.1)")
  rope = RopeConfig(rope_theta=float(p.get("rope_theta", 10000.0)))
  if p.get("use_scaled_rope"):
    # Llama 3.1's frequency scaling as in Meta's reference code (8192-token original context).
    rope = RopeConfig(rope_type="llama3", rope_theta=rope.rope_theta,
                      factor=float(p.get("rope_scaling_factor") or 8.0), low_freq_factor=1.0,
                      high_freq_factor=float(p.get("rope_high_freq_factor") or 4.0),
                      original_max_position_embeddings=8192)
  llama3_vocab = vocab == 128256
  kwargs = dict(
      vocab_size=vocab, d_model=dim, n_layers=int(p["n_layers"]), n_heads=int(p["n_heads"]),
      n_kv_heads=int(p.get("n_kv_heads") or p["n_heads"]),
      ffn_dim=llama_ffn_dim(dim, int(p.get("multiple_of", 256)), p.get("ffn_dim_multiplier")),
      norm_eps=float(p.get("norm_eps", 1e-5)), max_position_embeddings=int(max_len), rope=rope,
      tie_embeddings="output.weight" not in shards.keys()[0],
      bos_id=128000 if llama3_vocab else 1, eos_id=128001 if llama3_vocab else 2)
  kwargs.update(overrides)
  try:
    return ModelConfig(**kwargs)
  except ValueError as e:
    raise CheckpointError(f"{file}: {e}") from e


def read_meta(src: str | os.PathLike, dtype: str | None = None,
              max_position_embeddings: int | None = None, **overrides) -> tuple[ModelConfig, dict]:
  """(ModelConfig, nested NumPy params) from a Meta checkpoint directory.

  dtype: output parameter dtype (default: the embedding's dtype on disk); the config's
  param_dtype and compute dtype are set to it. max_position_embeddings: the context length when
  params.json has no max_seq_len (it wins over max_seq_len when given). overrides: other
  ModelConfig fields (e.g. bos_id, eos_id).
  """
  src = Path(src)
  try:
    import torch
  except ImportError:
    raise CheckpointError("reading Meta consolidated.*.pth checkpoints needs PyTorch: "
                          "pip install torch (the CPU wheel is enough)") from None
  files = shard_files(src)
  shards = _Shards(files)
  cfg = read_params_json(src, shards, max_position_embeddings, **overrides)

  keys = shards.keys()
  expected = {meta_name(n)[0] for n in weights.hf_names(cfg)}
  for f, k in zip(files, keys):
    missing = sorted(expected - k)
    if missing:
      raise CheckpointError(f"{f.name} lacks tensor(s) {missing[:8]}" +
                            (" ..." if len(missing) > 8 else ""))
    extra = sorted(k - expected - _IGNORED)
    if extra:
      raise CheckpointError(f"{f.name} has tensor(s) {extra[:8]} that are not part of a LLaMA "
                            f"with {src / PARAMS}")
  width = sum(shards.shape(r, "tok_embeddings.weight")[1] for r in range(len(files)))
  if width != cfg.d_model:
    raise CheckpointError(f"tok_embeddings.weight slices of the {len(files)} shard file(s) sum to "
                          f"width {width} but params.json dim={cfg.d_model}: a shard file is "
                          "missing or foreign")
  if dtype is None:
    import torch
    t = shards.first("tok_embeddings.weight").dtype
    names = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
    if t not in names:
      raise CheckpointError(f"tok_embeddings.weight is {t}; pass dtype (--dtype) explicitly")
    dtype = names[t]
  cfg = cfg.replace(param_dtype=dtype, dtype=dtype)
  shapes = weights.expected_hf_shapes(cfg)

  def get(hf_name):
    name, axis, heads = meta_name(hf_name)
    w = shards.get(name, axis)
    if w.shape != shapes[hf_name]:
      raise CheckpointError(f"tensor {name} ({len(files)} shard(s) joined on axis {axis}) has "
                            f"shape {w.shape} but {src / PARAMS} implies {shapes[hf_name]}")
    return interleaved_to_half(w, getattr(cfg, heads)) if heads else w

  return cfg, weights.hf_to_params(cfg, get, dtype=np_dtype(dtype))
