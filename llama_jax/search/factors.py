"""Factor vectors λ (inv_freq_i = θ_i / λ_i): the searches' starting points and their output file.

Starting points (DCIS's `init_factors` options; float64, one entry per rotation pair):
- `yarn` (the default of both searches): λ_i = s / (ramp_i + s·(1 − ramp_i)), exactly θ/θ'_YaRN
  for YaRN's index-linear ramp between the pairs that turn β_fast and β_slow times over the
  original length (`rope.ramp`), so pairs below the ramp keep 1 and pairs above it get s;
- `ntk`: λ_i = s^(2i/(d−2)), the NTK-aware base change written as factors;
- `ones`: plain RoPE;
- a file: a `rope.json` / `search.json` (its `long_factor`) or a JSON list.

The output `rope.json` is an HF `rope_parameters` dict of rope_type `longrope` whose long *and*
short factors are λ (DCIS has no short/long switch: the searched factors are used at every
length) with `attention_factor` = 0.1·ln s + 1, YaRN's temperature, which DCIS applies during the
search, fine-tuning and evaluation alike; `factor` = s and `original_max_position_embeddings` = L
as HF's longrope expects. `evaluate`, `generate` and `train` accept it as `--rope_json`, and a
model trained with it exports these `rope_parameters` to HF unchanged.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from llama_jax.core.errors import ConfigError
from llama_jax.rope import ramp
from llama_jax.rope.config import RopeConfig

STARTS = ("yarn", "ntk", "ones")


def mscale(s: float) -> float:
  """YaRN's attention temperature 0.1·ln s + 1 (1 for s <= 1)."""
  return 1.0 if s <= 1 else 0.1 * math.log(s) + 1.0


def yarn_start(s: float, head_dim: int, base: float, original_length: int,
               beta_fast: float = 32.0, beta_slow: float = 1.0) -> np.ndarray:
  """θ/θ'_YaRN per pair: s / (ramp + s·(1 − ramp)), float64."""
  low, high = ramp.correction_range(beta_fast, beta_slow, head_dim, base, original_length)
  if low == high:
    high += 0.001
  r = np.clip((np.arange(head_dim // 2, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
  return s / (r + s * (1.0 - r))


def ntk_start(s: float, head_dim: int) -> np.ndarray:
  return float(s) ** (np.arange(0, head_dim, 2, dtype=np.float64) / (head_dim - 2))


def read_factors(path: str | Path) -> np.ndarray:
  """λ from a rope.json / search.json (`long_factor`) or a JSON list of numbers."""
  try:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
  except FileNotFoundError:
    raise ConfigError(f"--init={str(path)!r}: no such file; allowed: {list(STARTS)} or a JSON "
                      "file with long_factor") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"--init={str(path)!r} is not valid JSON: {e}") from None
  if isinstance(data, dict):
    if "long_factor" not in data:
      raise ConfigError(f"--init={str(path)!r} has no long_factor (keys: {sorted(data)})")
    data = data["long_factor"]
  try:
    return np.asarray([float(x) for x in data], np.float64)
  except (TypeError, ValueError):
    raise ConfigError(f"--init={str(path)!r}: the factors must be a list of numbers") from None


def check_factors(factors, n_pairs: int, where: str = "factors") -> np.ndarray:
  """float64[n_pairs], or ConfigError naming the length / the bad value."""
  factors = np.asarray(factors, np.float64)
  if factors.ndim != 1 or factors.shape[0] != n_pairs:
    raise ConfigError(f"{where} has shape {factors.shape}; it needs head_dim/2 = {n_pairs} "
                      "entries (one per rotation pair)")
  if not np.all(np.isfinite(factors)) or factors.min() <= 0:
    raise ConfigError(f"{where} must be finite and > 0; got min {factors.min()!r}")
  return factors


def start_factors(init: str, s: float, head_dim: int, base: float, original_length: int,
                  beta_fast: float = 32.0, beta_slow: float = 1.0) -> np.ndarray:
  """The starting λ named by `init` (see the module docstring)."""
  if init == "yarn":
    factors = yarn_start(s, head_dim, base, original_length, beta_fast, beta_slow)
  elif init == "ntk":
    factors = ntk_start(s, head_dim)
  elif init == "ones":
    factors = np.ones(head_dim // 2)
  else:
    factors = read_factors(init)
  return check_factors(factors, head_dim // 2, f"--init={init}")


def rope_config(factors, s: float, original_length: int, rope_theta: float,
                max_position_embeddings: int | None = None) -> RopeConfig:
  """The `longrope` RopeConfig that applies λ at every length with the 0.1 ln s + 1 temperature."""
  lam = tuple(float(x) for x in factors)
  return RopeConfig(rope_type="longrope", rope_theta=float(rope_theta), factor=float(s),
                    original_max_position_embeddings=int(original_length),
                    attention_factor=mscale(s), short_factor=lam, long_factor=lam,
                    max_position_embeddings=max_position_embeddings)


def rope_parameters(factors, s: float, original_length: int, rope_theta: float) -> dict:
  """HF `rope_parameters` (the content of rope.json)."""
  return rope_config(factors, s, original_length, rope_theta).to_hf()
