"""Float64 NumPy implementations of the RoPE scaling formulas, written from the papers.

Independent of `llama_jax.rope` (which works in float32 JAX): used as the reference in tests.
Each returns (inv_freq float64[d/2], attention_scaling float).
"""
import math

import numpy as np


def theta(base, d):
  return base ** (-np.arange(0, d, 2, dtype=np.float64) / d)


def default(base, d):
  return theta(base, d), 1.0


def linear(base, d, s):
  return theta(base, d) / s, 1.0


def ntk(base, d, s):
  return theta(base * s ** (d / (d - 2)), d), 1.0


def dynamic(base, d, s, seq_len, max_len):
  seq = max(seq_len, max_len)
  new_base = base * (s * seq / max_len - (s - 1)) ** (d / (d - 2))
  return theta(new_base, d), 1.0


def yarn_bounds(d, base, orig_len, beta_fast=32, beta_slow=1, truncate=True):
  # Pair index at which the pair completes n rotations over the original length: L / λ_i = n.
  def dim_for(n):
    return d * math.log(orig_len / (2 * math.pi * n)) / (2 * math.log(base))
  low, high = dim_for(beta_fast), dim_for(beta_slow)
  if truncate:
    low, high = math.floor(low), math.ceil(high)
  return max(low, 0), min(high, d - 1)


def ntk_by_parts(base, d, s, orig_len, beta_fast=32, beta_slow=1, truncate=True):
  low, high = yarn_bounds(d, base, orig_len, beta_fast, beta_slow, truncate)
  if low == high:
    high += 0.001
  j = np.arange(d // 2, dtype=np.float64)
  gamma = np.clip((j - low) / (high - low), 0, 1)  # 0 = keep θ (fast), 1 = θ/s (slow)
  t = theta(base, d)
  return (t / s) * gamma + t * (1 - gamma), 1.0


def mscale(s, m=1.0):
  return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0


def yarn(base, d, s, orig_len, beta_fast=32, beta_slow=1, truncate=True, attention_factor=None,
         m=None, m_all=None):
  inv, _ = ntk_by_parts(base, d, s, orig_len, beta_fast, beta_slow, truncate)
  if attention_factor is not None:
    att = attention_factor
  elif m and m_all:
    att = mscale(s, m) / mscale(s, m_all)
  else:
    att = mscale(s)
  return inv, att


def dynamic_yarn(base, d, seq_len, orig_len, factor=1.0, beta_fast=32, beta_slow=1):
  s = max(seq_len / orig_len, factor, 1.0)
  inv, _ = ntk_by_parts(base, d, s, orig_len, beta_fast, beta_slow)
  return inv, mscale(s)


def llama3(base, d, s, low_ff, high_ff, orig_len):
  t = theta(base, d)
  wavelen = 2 * math.pi / t
  r = orig_len / wavelen  # rotations over the original context
  smooth = np.clip((r - low_ff) / (high_ff - low_ff), 0, 1)
  return (1 - smooth) * t / s + smooth * t, 1.0


def longrope(base, d, short, long, seq_len, orig_len, factor=None, max_len=None,
             attention_factor=None):
  lam = np.asarray(long if seq_len > orig_len else short, np.float64)
  s = factor if factor is not None else max_len / orig_len
  if attention_factor is None:
    attention_factor = 1.0 if s <= 1 else math.sqrt(1 + math.log(s) / math.log(orig_len))
  return theta(base, d) / lam, attention_factor


def rope_interleaved(x, positions, inv_freq):
  """Meta's complex form: (x_2i, x_2i+1) rotated by m·θ_i. x[T, d], positions[T]."""
  ang = positions[:, None] * inv_freq[None, :]
  c, s = np.cos(ang), np.sin(ang)
  out = np.empty_like(x)
  out[:, 0::2] = x[:, 0::2] * c - x[:, 1::2] * s
  out[:, 1::2] = x[:, 0::2] * s + x[:, 1::2] * c
  return out
