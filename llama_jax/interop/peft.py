"""Adapter directories of HF peft and of LLM-Adapters' peft fork: read and write.

A directory holds `adapter_config.json` and the adapter's tensors, named after the HF module
they adapt with the peft wrapper's prefix and no adapter name, one tensor per layer:

- LoRA (peft, `peft_type` LORA): `adapter_model.safetensors` with
  `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` [r, in],
  `...lora_B.weight` [out, r] and, with DoRA, `...lora_magnitude_vector` [out]; config fields
  r, lora_alpha, lora_dropout, target_modules, use_rslora, use_dora (the rest at peft's values).
- Prefix tuning (peft, PREFIX_TUNING): `prompt_embeddings` [n, L·2·K·head_dim], laid out as
  [n, L, (key, value), K, head_dim] (peft views it so and splits it into per-layer caches);
  num_virtual_tokens, num_layers, token_dim = K·head_dim, num_attention_heads = K.
- Bottleneck (LLM-Adapters' fork, BOTTLENECK): `adapter_model.bin` (a torch state dict; the fork
  reads nothing else) with `...mlp.down_proj.adapter_down.weight` [b, d_in],
  `...adapter_up.weight` [d_out, b] and, with scaling 'learned', `...adapter_scaling` [1];
  fields bottleneck_size, non_linearity, adapter_dropout, target_modules, use_parallel_adapter,
  scaling, bias, init_weights. The fork picks the placement from the module name (gate/up
  before, down after) unless use_parallel_adapter.

Our adapter parameters keep the base weight's axis split ([L, *in, r] for lora_A / adapter_down,
[L, r, *out] for lora_B / adapter_up, in this project's row-vector layout), so a torch [r, in]
matrix is our [*in, r] transposed and reshaped; q/k rows need no permutation (the model uses
HF's rotate-half layout). Reading checks everything before any tensor is used: the peft type,
options this project cannot express (per-module ranks, biases, fan_in_fan_out, layer subsets),
target names a LLaMA has, and every tensor's presence and shape against the base config.
Writing goes through `atomic_directory` (nothing at the destination unless complete).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from llama_jax import adapters
from llama_jax.adapters import registry as adapter_registry
from llama_jax.core.errors import CheckpointError, ConfigError
from llama_jax.core.files import atomic_directory
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import ModelConfig

CONFIG = "adapter_config.json"
SAFETENSORS = "adapter_model.safetensors"
BIN = "adapter_model.bin"
LAYER_PREFIX = "base_model.model.model.layers"
HF_MODULES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
              "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
              "down": "mlp.down_proj"}
_BY_HF_NAME = {m.split(".")[-1]: t for t, m in HF_MODULES.items()}
# Our leaf → (peft tensor suffix, layout): "rank_last" [*A, r] ↔ torch [r, A];
# "rank_first" [r, *A] ↔ torch [A, r]; "vector" [*A] ↔ [A]; "scalar" [] ↔ [1].
_LEAVES = {
    "lora_a": ("lora_A.weight", "rank_last"), "lora_b": ("lora_B.weight", "rank_first"),
    "magnitude": ("lora_magnitude_vector", "vector"),
    "adapter_down": ("adapter_down.weight", "rank_last"),
    "adapter_up": ("adapter_up.weight", "rank_first"),
    "adapter_scaling": ("adapter_scaling", "scalar"),
}
PEFT_TYPES = {"lora": "LORA", "prefix": "PREFIX_TUNING", "series": "BOTTLENECK",
              "parallel": "BOTTLENECK"}


# ------------------------------------------------------------------------------ config
def _targets(value, src) -> tuple[str, ...]:
  """peft `target_modules` (a list of module-name suffixes, a regex, or 'all-linear') → ours."""
  if value == "all-linear":
    return tuple(HF_MODULES)
  if isinstance(value, str):  # peft matches a string with re.fullmatch on full module names
    picked = [t for t, m in HF_MODULES.items() if re.fullmatch(value, f"model.layers.0.{m}")]
    if not picked:
      raise CheckpointError(f"{src}: target_modules={value!r} matches no LLaMA projection "
                            f"({sorted(_BY_HF_NAME)}); is it an adapter for another model?")
    return tuple(picked)
  if not isinstance(value, (list, tuple)) or not value:
    raise CheckpointError(f"{src}: target_modules={value!r}; expected a list of module names")
  out = []
  for name in value:
    leaf = str(name).split(".")[-1]
    if leaf not in _BY_HF_NAME:
      raise CheckpointError(
          f"{src}: target_modules contains {name!r}, which is not a LLaMA projection; allowed: "
          f"{sorted(_BY_HF_NAME)} (this adapter was made for another architecture?)")
    out.append(_BY_HF_NAME[leaf])
  return tuple(dict.fromkeys(out))


def _refuse(src, hf: dict, field: str, allowed) -> None:
  value = hf.get(field)
  ok = allowed(value) if callable(allowed) else value in allowed
  if not ok:
    raise CheckpointError(f"{src}: {field}={value!r} is not supported here (a LLaMA adapter has "
                          f"no such setting in llama_jax); re-train or convert without it")


def adapter_from_config(hf: dict, cfg: ModelConfig, src="adapter_config.json"):
  """Our adapter for a peft / LLM-Adapters `adapter_config.json` (ConfigError / CheckpointError
  for one this model cannot take)."""
  peft_type = str(hf.get("peft_type", "")).upper()
  task = hf.get("task_type")
  if task not in (None, "CAUSAL_LM"):
    raise CheckpointError(f"{src}: task_type={task!r}; a LLaMA language-model adapter has "
                          "task_type CAUSAL_LM")
  empty = lambda v: not v
  try:
    if peft_type == "LORA":
      for field in ("rank_pattern", "alpha_pattern", "layers_to_transform", "modules_to_save",
                    "layer_replication", "trainable_token_indices", "target_parameters",
                    "exclude_modules"):
        _refuse(src, hf, field, empty)
      _refuse(src, hf, "fan_in_fan_out", (False, None))
      _refuse(src, hf, "bias", ("none", None))
      _refuse(src, hf, "lora_bias", (False, None))
      for field in ("use_qalora", "use_bdlora"):
        _refuse(src, hf, field, (False, None))
      return adapters.build("lora", dict(
          rank=int(hf.get("r", 8)), alpha=float(hf.get("lora_alpha", 8)),
          dropout=float(hf.get("lora_dropout", 0.0) or 0.0),
          # peft's (and the fork's) default for LLaMA when none are named: q_proj, v_proj
          targets=_targets(hf.get("target_modules") or ["q_proj", "v_proj"], src),
          rslora=bool(hf.get("use_rslora", False)), dora=bool(hf.get("use_dora", False))), cfg)
    if peft_type == "PREFIX_TUNING":
      want = {"num_layers": cfg.n_layers, "token_dim": cfg.n_kv_heads * cfg.head_dim,
              "num_attention_heads": cfg.n_kv_heads, "num_transformer_submodules": 1}
      for field, value in want.items():
        if hf.get(field) not in (None, value):
          raise CheckpointError(
              f"{src}: {field}={hf[field]!r} but the base model needs {value} ({cfg.n_layers} "
              f"layers, {cfg.n_kv_heads} key/value heads of {cfg.head_dim}): an adapter for "
              "another model")
      return adapters.build("prefix", dict(
          num_virtual_tokens=int(hf["num_virtual_tokens"])), cfg)
    if peft_type == "BOTTLENECK":
      _refuse(src, hf, "bias", ("none", None))
      _refuse(src, hf, "modules_to_save", empty)
      kind = "parallel" if hf.get("use_parallel_adapter") else "series"
      scaling = hf.get("scaling", 1.0)
      # The fork's defaults when none are named: series gate/up/down, parallel q/v/k.
      default = (["gate_proj", "up_proj", "down_proj"] if kind == "series"
                 else ["q_proj", "v_proj", "k_proj"])
      return adapters.build(kind, dict(
          bottleneck_size=int(hf.get("bottleneck_size", 256)),
          non_linearity=hf.get("non_linearity", "tanh"),
          scaling=scaling if scaling == "learned" else float(scaling),
          targets=_targets(hf.get("target_modules") or default, src),
          init=hf.get("init_weights", "bert"),
          dropout=float(hf.get("adapter_dropout", 0.0) or 0.0)), cfg)
  except KeyError as e:
    raise CheckpointError(f"{src}: missing field {e}") from None
  except ConfigError as e:
    raise CheckpointError(f"{src}: {e}") from None
  raise CheckpointError(f"{src}: peft_type={hf.get('peft_type')!r}; supported: LORA, "
                        "PREFIX_TUNING, BOTTLENECK (LLM-Adapters)")


def config_for(adapter, cfg: ModelConfig, base_model: str = "") -> dict:
  """The adapter_config.json of our adapter (peft's fields; the fork's for bottlenecks)."""
  common = {"base_model_name_or_path": base_model or None, "task_type": "CAUSAL_LM",
            "inference_mode": True, "revision": None}
  targets = [HF_MODULES[t].split(".")[-1] for t in getattr(adapter, "targets", ())]
  if adapter.name == "lora":
    return {**common, "peft_type": "LORA", "r": adapter.rank, "lora_alpha": adapter.alpha,
            "lora_dropout": adapter.dropout, "target_modules": targets, "bias": "none",
            "fan_in_fan_out": False, "use_rslora": adapter.rslora, "use_dora": adapter.dora,
            "init_lora_weights": True, "modules_to_save": None, "layers_to_transform": None,
            "layers_pattern": None, "rank_pattern": {}, "alpha_pattern": {},
            "lora_bias": False}
  if adapter.name == "prefix":
    dim = cfg.n_kv_heads * cfg.head_dim
    return {**common, "peft_type": "PREFIX_TUNING",
            "num_virtual_tokens": adapter.num_virtual_tokens, "num_layers": cfg.n_layers,
            "token_dim": dim, "num_attention_heads": cfg.n_kv_heads,
            "num_transformer_submodules": 1, "encoder_hidden_size": dim,
            "prefix_projection": False}
  if adapter.name == "series":
    bad = [t for t in adapter.targets if t not in ("gate", "up", "down")]
    if bad:
      raise CheckpointError(
          f"LLM-Adapters' fork places series adapters on gate_proj, up_proj and down_proj only "
          f"(its name map has no {[HF_MODULES[t].split('.')[-1] for t in bad]}); this adapter "
          "cannot be written in its format")
  return {**common, "peft_type": "BOTTLENECK", "bottleneck_size": adapter.bottleneck_size,
          "non_linearity": adapter.non_linearity, "adapter_dropout": adapter.dropout,
          "target_modules": targets, "use_parallel_adapter": adapter.name == "parallel",
          "scaling": adapter.scaling, "bias": "none", "init_weights": adapter.init,
          "modules_to_save": None}


# ------------------------------------------------------------------------------ tensors
def _to_torch_layout(x: np.ndarray, layout: str) -> np.ndarray:
  if layout == "rank_last":
    return x.reshape(-1, x.shape[-1]).T
  if layout == "rank_first":
    return x.reshape(x.shape[0], -1).T
  if layout == "vector":
    return x.reshape(-1)
  return x.reshape(1)


def _from_torch_layout(t: np.ndarray, layout: str, shape: tuple[int, ...]) -> np.ndarray:
  if layout == "rank_last":
    return t.T.reshape(shape)
  if layout == "rank_first":
    return t.T.reshape(shape)
  return t.reshape(shape)


def _torch_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  if layout == "rank_last":
    return (shape[-1], int(np.prod(shape[:-1])))
  if layout == "rank_first":
    return (int(np.prod(shape[1:])), shape[0])
  if layout == "vector":
    return (int(np.prod(shape)),)
  return (1,)


def _leaves(spec: spec_lib.ModelSpec):
  """(target, our leaf, peft suffix, layout, per-layer shape) of every projection leaf."""
  own = spec.saved_params(spec.abstract_params)
  for target in getattr(spec.adapter, "targets", ()):
    seam = adapter_registry.get_path(own, adapter_registry.seam_path(target))
    for leaf, value in sorted(seam.items()):
      suffix, layout = _LEAVES[leaf]
      yield target, leaf, suffix, layout, tuple(value.shape[1:])


def to_tensors(spec: spec_lib.ModelSpec, params: dict) -> dict[str, np.ndarray]:
  """peft tensor name → array (float32) for the adapter part of `params`."""
  cfg, out = spec.config, {}
  if spec.adapter.name == "prefix":
    prefix = params["layers"]["attention"]["prefix"]
    k, v = (np.asarray(prefix[x], np.float32) for x in ("key", "value"))  # [L, n, K, hd]
    kv = np.stack([k, v], axis=2)  # [L, n, 2, K, hd]
    out["prompt_embeddings"] = np.ascontiguousarray(
        kv.transpose(1, 0, 2, 3, 4).reshape(k.shape[1], -1))
    return out
  for target, leaf, suffix, layout, _ in _leaves(spec):
    stacked = np.asarray(adapter_registry.get_path(
        params, adapter_registry.seam_path(target) + (leaf,)), np.float32)
    for i in range(cfg.n_layers):
      name = f"{LAYER_PREFIX}.{i}.{HF_MODULES[target]}.{suffix}"
      out[name] = np.ascontiguousarray(_to_torch_layout(stacked[i], layout))
  return out


def from_tensors(spec: spec_lib.ModelSpec, get, names: set[str], src) -> dict:
  """The adapter parameters (nested dict, float32) from peft tensors; `get(name)` reads one.

  Every expected tensor must be present with its shape, and no other adapter tensor may be.
  """
  cfg = spec.config
  if spec.adapter.name == "prefix":
    n = spec.adapter.num_virtual_tokens
    want = (n, cfg.n_layers * 2 * cfg.n_kv_heads * cfg.head_dim)
    _expect(src, names, {"prompt_embeddings"})
    emb = np.asarray(get("prompt_embeddings"), np.float32)
    if emb.shape != want:
      raise CheckpointError(f"{src}: prompt_embeddings has shape {emb.shape} but the base model "
                            f"({cfg.n_layers} layers, {cfg.n_kv_heads} key/value heads of "
                            f"{cfg.head_dim}) with {n} virtual tokens needs {want}")
    kv = emb.reshape(n, cfg.n_layers, 2, cfg.n_kv_heads, cfg.head_dim).transpose(1, 0, 2, 3, 4)
    return {"layers": {"attention": {"prefix": {"key": np.ascontiguousarray(kv[:, :, 0]),
                                                "value": np.ascontiguousarray(kv[:, :, 1])}}}}
  leaves = list(_leaves(spec))
  expected = {f"{LAYER_PREFIX}.{i}.{HF_MODULES[t]}.{suffix}"
              for t, _, suffix, _, _ in leaves for i in range(cfg.n_layers)}
  _expect(src, names, expected)
  params: dict = {}
  for target, leaf, suffix, layout, shape in leaves:
    stacked = np.empty((cfg.n_layers,) + shape, np.float32)
    for i in range(cfg.n_layers):
      name = f"{LAYER_PREFIX}.{i}.{HF_MODULES[target]}.{suffix}"
      t = np.asarray(get(name), np.float32)
      if t.shape != _torch_shape(shape, layout):
        raise CheckpointError(
            f"{src}: tensor {name} has shape {t.shape} but the base model needs "
            f"{_torch_shape(shape, layout)} (d_model {cfg.d_model}, {cfg.n_heads}/"
            f"{cfg.n_kv_heads} heads of {cfg.head_dim}, ffn {cfg.ffn_dim}): the adapter does "
            "not fit this base model")
      stacked[i] = _from_torch_layout(t, layout, shape)
    params = adapter_registry.set_path(
        params, adapter_registry.seam_path(target) + (leaf,), stacked)
  return params


def _expect(src, names: set[str], expected: set[str]) -> None:
  missing, extra = sorted(expected - names), sorted(names - expected)
  if missing or extra:
    raise CheckpointError(
        f"{src}: the adapter's tensors do not match its config and the base model: missing "
        f"{missing[:4]}{' ...' if len(missing) > 4 else ''}, unexpected {extra[:4]}"
        f"{' ...' if len(extra) > 4 else ''}")


# ------------------------------------------------------------------------------ files
def is_adapter_dir(path: str | os.PathLike) -> bool:
  return (Path(os.path.expanduser(os.fspath(path))) / CONFIG).is_file()


def read_config(src: str | os.PathLike) -> dict:
  file = Path(src) / CONFIG
  if not file.is_file():
    raise CheckpointError(f"{file} not found: a peft adapter directory holds {CONFIG} and "
                          f"{SAFETENSORS} (or LLM-Adapters' {BIN})")
  try:
    hf = json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{file} is not valid JSON: {e}") from e
  if not isinstance(hf, dict):
    raise CheckpointError(f"{file} is not a JSON object")
  return hf


def _open_tensors(src: Path):
  """(names, get) over the directory's safetensors file, else its torch .bin state dict."""
  if (src / SAFETENSORS).is_file():
    from safetensors import safe_open
    file = src / SAFETENSORS
    try:
      with safe_open(str(file), framework="numpy") as f:
        names = set(f.keys())
    except Exception as e:  # the Rust reader's SafetensorError, OSError
      raise CheckpointError(f"{file} cannot be read: {e}") from e

    def get(name):
      with safe_open(str(file), framework="numpy") as f:
        return f.get_tensor(name)
    return names, get
  if (src / BIN).is_file():
    try:
      import torch
    except ImportError:
      raise CheckpointError(f"{src / BIN} is a torch file; reading it needs torch "
                            "(pip install torch)") from None
    state = torch.load(src / BIN, map_location="cpu", weights_only=True)
    return set(state), lambda name: state[name].float().numpy()
  raise CheckpointError(f"no {SAFETENSORS} or {BIN} in {src}")


def read_adapter(src: str | os.PathLike, cfg: ModelConfig):
  """(adapter, its parameters as a nested dict of float32 NumPy arrays) from a peft or
  LLM-Adapters directory, for the base model `cfg`."""
  src = Path(os.path.expanduser(os.fspath(src)))
  adapter = adapter_from_config(read_config(src), cfg, src / CONFIG)
  spec = spec_lib.ModelSpec.build(cfg, adapter=adapter)
  names, get = _open_tensors(src)
  return adapter, from_tensors(spec, get, names, src)


def write_adapter(dst: str | os.PathLike, spec: spec_lib.ModelSpec, params: dict,
                  base_model: str = "", overwrite: bool = False) -> list[Path]:
  """Writes the adapter of `spec` (values from `params`, base + adapter or adapter only) as a
  peft directory (LoRA, prefix) or LLM-Adapters' (series, parallel); returns the files."""
  if spec.adapter is None:
    raise CheckpointError("this model has no adapter to export; export the whole model with "
                          "--to=hf instead")
  hf = config_for(spec.adapter, spec.config, base_model)
  tensors = to_tensors(spec, params)
  bottleneck = hf["peft_type"] == "BOTTLENECK"
  if bottleneck:
    try:
      import torch
    except ImportError:
      raise CheckpointError(f"LLM-Adapters' format is a torch file ({BIN}); writing it needs "
                            "torch (pip install torch)") from None
  dst = Path(dst)
  with atomic_directory(dst, overwrite) as tmp:
    (tmp / CONFIG).write_text(json.dumps(hf, indent=2, sort_keys=True) + "\n")
    if bottleneck:
      torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, tmp / BIN)
    else:
      from safetensors.numpy import save_file
      save_file(tensors, str(tmp / SAFETENSORS), metadata={"format": "pt"})
  return [dst / CONFIG, dst / (BIN if bottleneck else SAFETENSORS)]
