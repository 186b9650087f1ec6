"""The tensor-by-tensor correspondence between HF `LlamaForCausalLM` and llama_jax parameters.

Pure layout: names, transposes and reshapes, nothing about files. `interop/convert.py` streams
tensors through these maps. llama_jax stacks the L blocks on a leading axis, so each HF per-layer
tensor fills one slice of a stacked array.

HF stores `nn.Linear` weights as [out, in]; llama_jax kernels are [in, ...out] with heads as
their own axis (q: [d_model, n_heads, head_dim]; o: [n_heads, head_dim, d_model]).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from llama_jax.model.config import ModelConfig

Path = tuple[str, ...]


def _layer_map(cfg: ModelConfig):
  """(HF suffix, llama_jax path, HF→llama_jax fn, llama_jax→HF fn) for one block."""
  d, h, k, hd = cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim

  def heads_in(n):  # [n*hd, d] -> [d, n, hd]
    return (lambda w: w.T.reshape(d, n, hd), lambda p: p.reshape(d, n * hd).T)

  return [
      ("self_attn.q_proj.weight", ("layers", "attention", "q"), *heads_in(h)),
      ("self_attn.k_proj.weight", ("layers", "attention", "k"), *heads_in(k)),
      ("self_attn.v_proj.weight", ("layers", "attention", "v"), *heads_in(k)),
      ("self_attn.o_proj.weight", ("layers", "attention", "o"),
       lambda w: w.T.reshape(h, hd, d), lambda p: p.reshape(h * hd, d).T),
      ("mlp.gate_proj.weight", ("layers", "ffn", "gate"), np.transpose, np.transpose),
      ("mlp.up_proj.weight", ("layers", "ffn", "up"), np.transpose, np.transpose),
      ("mlp.down_proj.weight", ("layers", "ffn", "down"), np.transpose, np.transpose),
      ("input_layernorm.weight", ("layers", "attention_norm", "scale"), None, None),
      ("post_attention_layernorm.weight", ("layers", "ffn_norm", "scale"), None, None),
  ]


def _global_map(cfg: ModelConfig):
  out = [
      ("model.embed_tokens.weight", ("embed",), None, None),
      ("model.norm.weight", ("norm", "scale"), None, None),
  ]
  if not cfg.tie_embeddings:
    out.append(("lm_head.weight", ("lm_head",), None, None))
  return out


def hf_names(cfg: ModelConfig) -> list[str]:
  """Every tensor name a complete HF checkpoint of this config holds."""
  names = [name for name, *_ in _global_map(cfg)]
  for i in range(cfg.n_layers):
    names += [f"model.layers.{i}.{suffix}" for suffix, *_ in _layer_map(cfg)]
  return names


def expected_hf_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
  d, h, k, hd, f, v = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim,
                       cfg.vocab_size)
  per_layer = {
      "self_attn.q_proj.weight": (h * hd, d), "self_attn.k_proj.weight": (k * hd, d),
      "self_attn.v_proj.weight": (k * hd, d), "self_attn.o_proj.weight": (d, h * hd),
      "mlp.gate_proj.weight": (f, d), "mlp.up_proj.weight": (f, d),
      "mlp.down_proj.weight": (d, f), "input_layernorm.weight": (d,),
      "post_attention_layernorm.weight": (d,),
  }
  shapes = {"model.embed_tokens.weight": (v, d), "model.norm.weight": (d,)}
  if not cfg.tie_embeddings:
    shapes["lm_head.weight"] = (v, d)
  for i in range(cfg.n_layers):
    shapes.update({f"model.layers.{i}.{s}": shape for s, shape in per_layer.items()})
  return shapes


def hf_to_params(cfg: ModelConfig, get: Callable[[str], np.ndarray], dtype=None) -> dict:
  """Builds the nested llama_jax parameter dict, reading one HF tensor at a time via `get`.

  Stacked arrays are preallocated and filled layer by layer, so peak memory is the model plus
  one tensor. Shapes are checked against the config before anything is stored.
  """
  shapes = expected_hf_shapes(cfg)
  params: dict = {}

  def read(name):
    w = np.asarray(get(name))
    if tuple(w.shape) != shapes[name]:
      raise ValueError(f"tensor {name} has shape {tuple(w.shape)} but the config implies "
                       f"{shapes[name]}")
    return w if dtype is None else w.astype(dtype)

  def put(path, value):
    node = params
    for key in path[:-1]:
      node = node.setdefault(key, {})
    node[path[-1]] = value

  for name, path, fn, _ in _global_map(cfg):
    w = read(name)
    put(path, fn(w) if fn else w)
  for suffix, path, fn, _ in _layer_map(cfg):
    stacked = None
    for i in range(cfg.n_layers):
      w = read(f"model.layers.{i}.{suffix}")
      w = fn(w) if fn else w
      if stacked is None:
        stacked = np.empty((cfg.n_layers,) + w.shape, w.dtype)
      stacked[i] = w
    put(path, stacked)
  return params


def params_to_hf(cfg: ModelConfig, params: dict) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF name, array) one tensor at a time from a nested llama_jax parameter dict."""

  def at(path):
    node = params
    for key in path:
      node = node[key]
    return node

  for name, path, _, inv in _global_map(cfg):
    w = np.asarray(at(path))
    yield name, np.ascontiguousarray(inv(w) if inv else w)
  for i in range(cfg.n_layers):
    for suffix, path, _, inv in _layer_map(cfg):
      w = np.asarray(at(path)[i])
      yield f"model.layers.{i}.{suffix}", np.ascontiguousarray(inv(w) if inv else w)
