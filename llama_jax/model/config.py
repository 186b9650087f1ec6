"""`ModelConfig`: every hyperparameter of a LLaMA-family model, with the published presets.

One frozen dataclass (hashable, so it can be a static argument of `jax.jit`). It maps 1:1 onto an
HF `LlamaConfig` (`from_hf` / `to_hf`), and `configs/*.py` carry it as `config.model` in a
ConfigDict (`from_dict` / `to_dict`). Validation runs at construction, so a bad value fails with
the field's name before any device is touched.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

from llama_jax import attention
from llama_jax.attention import self_extend
from llama_jax.model import remat
from llama_jax.rope import registry as rope_registry
from llama_jax.rope.config import RopeConfig

DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  vocab_size: int = 32000
  d_model: int = 4096
  n_layers: int = 32
  n_heads: int = 32
  n_kv_heads: int | None = None  # None: multi-head attention (= n_heads)
  head_dim: int | None = None  # None: d_model // n_heads
  ffn_dim: int = 11008
  norm_eps: float = 1e-6
  max_position_embeddings: int = 2048
  rope: RopeConfig = RopeConfig()
  tie_embeddings: bool = False
  param_dtype: str = "float32"
  dtype: str = "float32"  # compute dtype of activations and matmuls
  attention: str = "xla"
  attention_block_size: int = 512  # key/query block for the chunked kernel
  # Self-Extend (attention/self_extend.py): neighbour window W and group size G; None = off.
  self_extend_window: int | None = None
  self_extend_group: int | None = None
  remat: str = "none"
  scan_layers: bool = True
  init_std: float = 0.02
  bos_id: int = 1
  eos_id: int = 2

  def __post_init__(self):
    if isinstance(self.rope, Mapping):
      object.__setattr__(self, "rope", RopeConfig.from_dict(self.rope))
    if self.n_kv_heads is None:
      object.__setattr__(self, "n_kv_heads", self.n_heads)
    if self.head_dim is None and self.n_heads and self.d_model % self.n_heads == 0:
      object.__setattr__(self, "head_dim", self.d_model // self.n_heads)
    if self.rope.max_position_embeddings is None:
      object.__setattr__(
          self, "rope", self.rope.replace(max_position_embeddings=self.max_position_embeddings))
    self.validate()

  # ---------------------------------------------------------------- validation
  def validate(self) -> None:
    def positive(name):
      value = getattr(self, name)
      if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"model.{name}={value!r} must be a positive integer")

    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "ffn_dim",
                 "max_position_embeddings", "attention_block_size"):
      positive(name)
    if self.head_dim is None:
      raise ValueError(
          f"model.head_dim is None and d_model={self.d_model} is not divisible by "
          f"n_heads={self.n_heads}; set head_dim explicitly")
    positive("head_dim")
    if self.n_heads % self.n_kv_heads:
      raise ValueError(
          f"model.n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads} "
          "(grouped-query attention shares each key/value head among n_heads/n_kv_heads queries)")
    if not (isinstance(self.norm_eps, float) and self.norm_eps > 0):
      raise ValueError(f"model.norm_eps={self.norm_eps!r} must be a positive float")
    for name in ("param_dtype", "dtype"):
      if getattr(self, name) not in DTYPES:
        raise ValueError(f"model.{name}={getattr(self, name)!r}; allowed: {list(DTYPES)}")
    if self.attention not in attention.names():
      raise ValueError(f"model.attention={self.attention!r}; allowed: {attention.names()}")
    self_extend.check(self.self_extend_window, self.self_extend_group)
    if self.self_extend:
      attention.check_self_extend(self.attention)
    if self.remat not in remat.names():
      raise ValueError(f"model.remat={self.remat!r}; allowed: {remat.names()}")
    rope_registry.validate(self.rope, self.head_dim)

  # ---------------------------------------------------------------- derived
  @property
  def self_extend(self) -> bool:
    """Whether attention runs Self-Extend (window and group set)."""
    return self.self_extend_group is not None

  @property
  def q_per_kv(self) -> int:
    return self.n_heads // self.n_kv_heads

  def num_params(self, include_embeddings: bool = True) -> int:
    d, h, k, hd, f, v = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim,
                         self.ffn_dim, self.vocab_size)
    per_layer = d * hd * (2 * h + 2 * k) + 3 * d * f + 2 * d
    total = self.n_layers * per_layer + d
    if include_embeddings:
      total += v * d * (1 if self.tie_embeddings else 2)
    return total

  def flops_per_token(self, seq_len: int, training: bool = True) -> float:
    """Model FLOPs per token with the causal attention convention (MaxText since 2025).

    Matmuls: 2 FLOPs per multiply-add; attention counts half of the S x S score and value
    products because of the causal mask. Training = 3x forward (backward is 2x forward).
    """
    d, h, k, hd, f, v = (self.d_model, self.n_heads, self.n_kv_heads, self.head_dim,
                         self.ffn_dim, self.vocab_size)
    proj = 2 * d * hd * (h + 2 * k) + 2 * d * h * hd
    mlp = 6 * d * f
    attn = 2 * seq_len * h * hd  # causal: (QK^T + PV) = 4*S*H*hd, halved
    forward = self.n_layers * (proj + mlp + attn) + 2 * d * v
    return forward * (3 if training else 1)

  # ---------------------------------------------------------------- conversions
  def replace(self, **changes) -> "ModelConfig":
    # The rope record mirrors max_position_embeddings; keep it in step unless a new rope is given.
    if "max_position_embeddings" in changes and "rope" not in changes:
      changes["rope"] = self.rope.replace(max_position_embeddings=None)
    elif isinstance(changes.get("rope"), Mapping):
      changes["rope"] = RopeConfig.from_dict(changes["rope"])
    # Sizes derived from others are derived again (not frozen at the old values) unless given:
    # head_dim = d_model / n_heads, and multi-head attention's n_kv_heads = n_heads.
    if ({"d_model", "n_heads"} & changes.keys() and "head_dim" not in changes
        and self.head_dim * self.n_heads == self.d_model):
      changes["head_dim"] = None
    if ("n_heads" in changes and "n_kv_heads" not in changes
        and self.n_kv_heads == self.n_heads):
      changes["n_kv_heads"] = None
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["rope"] = self.rope.to_dict(drop_none=False)
    for key in ("short_factor", "long_factor"):
      if d["rope"][key] is not None:
        d["rope"][key] = list(d["rope"][key])
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> "ModelConfig":
    d = dict(d)
    unknown = sorted(set(d) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
      raise ValueError(f"model: unknown field(s) {unknown}; allowed: "
                       f"{[f.name for f in dataclasses.fields(cls)]}")
    rope = d.pop("rope", None)
    if rope is not None and not isinstance(rope, RopeConfig):
      rope = RopeConfig.from_dict({k: v for k, v in dict(rope).items() if v is not None})
    return cls(**d, **({"rope": rope} if rope is not None else {}))

  @classmethod
  def from_hf(cls, hf: Mapping[str, Any], **overrides) -> "ModelConfig":
    """Builds the config from an HF LlamaConfig dict (config.json)."""
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"config.json hidden_act={hf['hidden_act']!r}: llama_jax supports 'silu'")
    for flag in ("attention_bias", "mlp_bias"):
      if hf.get(flag):
        raise ValueError(f"config.json {flag}=true: LLaMA has no biases and llama_jax none either")
    eos = hf.get("eos_token_id", 2)
    kwargs = dict(
        vocab_size=int(hf["vocab_size"]),
        d_model=int(hf["hidden_size"]),
        n_layers=int(hf["num_hidden_layers"]),
        n_heads=int(hf["num_attention_heads"]),
        n_kv_heads=int(hf.get("num_key_value_heads") or hf["num_attention_heads"]),
        head_dim=int(hf["head_dim"]) if hf.get("head_dim") else None,
        ffn_dim=int(hf["intermediate_size"]),
        norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(hf.get("max_position_embeddings", 2048)),
        rope=RopeConfig.from_hf(hf),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        bos_id=int(hf.get("bos_token_id", 1) if hf.get("bos_token_id") is not None else 1),
        eos_id=int(eos[0] if isinstance(eos, (list, tuple)) else (eos if eos is not None else 2)),
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf(self, torch_dtype: str = "float32") -> dict[str, Any]:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": self.vocab_size,
        "hidden_size": self.d_model,
        "intermediate_size": self.ffn_dim,
        "num_hidden_layers": self.n_layers,
        "num_attention_heads": self.n_heads,
        "num_key_value_heads": self.n_kv_heads,
        "head_dim": self.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": self.norm_eps,
        "max_position_embeddings": self.max_position_embeddings,
        "rope_parameters": self.rope.to_hf(),
        "tie_word_embeddings": self.tie_embeddings,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": self.bos_id,
        "eos_token_id": self.eos_id,
        "dtype": torch_dtype,
    }


def llama_ffn_dim(d_model: int, multiple_of: int = 256, ffn_dim_multiplier: float | None = None):
  """SwiGLU hidden size of LLaMA: 2/3 of 4d, times an optional multiplier, rounded up."""
  hidden = int(2 * 4 * d_model / 3)
  if ffn_dim_multiplier is not None:
    hidden = int(ffn_dim_multiplier * hidden)
  return multiple_of * math.ceil(hidden / multiple_of)


# LLaMA-1 (Touvron et al. 2023, Table 2), Llama 2 (Touvron et al. 2023b), Llama 3.1.
PRESETS: dict[str, ModelConfig] = {
    "llama_7b": ModelConfig(d_model=4096, n_layers=32, n_heads=32, ffn_dim=11008),
    "llama_13b": ModelConfig(d_model=5120, n_layers=40, n_heads=40, ffn_dim=13824),
    "llama_33b": ModelConfig(d_model=6656, n_layers=60, n_heads=52, ffn_dim=17920),
    "llama_65b": ModelConfig(d_model=8192, n_layers=80, n_heads=64, ffn_dim=22016),
    "llama2_7b": ModelConfig(d_model=4096, n_layers=32, n_heads=32, ffn_dim=11008,
                             norm_eps=1e-5, max_position_embeddings=4096),
    "llama2_13b": ModelConfig(d_model=5120, n_layers=40, n_heads=40, ffn_dim=13824,
                              norm_eps=1e-5, max_position_embeddings=4096),
    "llama2_70b": ModelConfig(d_model=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                              ffn_dim=28672, norm_eps=1e-5, max_position_embeddings=4096),
    "llama3_1_8b": ModelConfig(
        vocab_size=128256, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336,
        norm_eps=1e-5, max_position_embeddings=131072, bos_id=128000, eos_id=128001,
        rope=RopeConfig(rope_type="llama3", rope_theta=500000.0, factor=8.0,
                        low_freq_factor=1.0, high_freq_factor=4.0,
                        original_max_position_embeddings=8192)),
    # Test shapes: GQA, head_dim independent of d_model / n_heads.
    "tiny": ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                        ffn_dim=128, norm_eps=1e-5, max_position_embeddings=256),
    "tiny_wide_heads": ModelConfig(vocab_size=256, d_model=48, n_layers=2, n_heads=4,
                                   n_kv_heads=2, head_dim=16, ffn_dim=96, norm_eps=1e-5,
                                   max_position_embeddings=256),
}


def preset(name: str, **overrides) -> ModelConfig:
  if name not in PRESETS:
    raise ValueError(f"model preset {name!r} is unknown; allowed: {sorted(PRESETS)}")
  cfg = PRESETS[name]
  return cfg.replace(**overrides) if overrides else cfg
