"""Float64 NumPy Self-Extend attention and a one-layer LLaMA forward, written from the method.

Self-Extend (Jin et al. 2024): two score matrices, one from queries/keys rotated at their own
positions, one from queries rotated at ⌊i/G⌋ + W − W/G and keys at ⌊j/G⌋; the first is used
where i − j < W, the second elsewhere; causal mask, then one softmax. Rotation in HF's
rotate-half layout. Independent of `llama_jax` (no JAX).
"""
import numpy as np


def rotate(x, positions, inv_freq):
  """x[T, N, D] rotated by positions[T] · inv_freq[D/2] (rotate-half pairs i, i + D/2)."""
  ang = np.asarray(positions, np.float64)[:, None] * inv_freq[None, :]
  cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
  sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
  half = x.shape[-1] // 2
  rot = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rot * sin


def attention(q, k, v, positions, inv_freq, window=None, group=None):
  """One sequence: q[T, H, D], k/v[T, K, D] (unrotated), positions[T] → [T, H, D].

  window/group None: plain RoPE attention.
  """
  t, h, d = q.shape
  n_kv = k.shape[1]
  positions = np.asarray(positions)
  qn, kn = rotate(q, positions, inv_freq), rotate(k, positions, inv_freq)
  if group is not None:
    qg = rotate(q, positions // group + window - window // group, inv_freq)
    kg = rotate(k, positions // group, inv_freq)
  idx = np.arange(t)
  out = np.zeros((t, h, d))
  for hi in range(h):
    kh = hi // (h // n_kv)
    scores = qn[:, hi] @ kn[:, kh].T / np.sqrt(d)
    if group is not None:
      grouped = qg[:, hi] @ kg[:, kh].T / np.sqrt(d)
      scores = np.where(idx[:, None] - idx[None, :] < window, scores, grouped)
    scores = np.where(idx[None, :] <= idx[:, None], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    out[:, hi] = (p / p.sum(-1, keepdims=True)) @ v[:, kh]
  return out


def _rms_norm(x, g, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g


def llama_one_layer(params, tokens, positions, inv_freq, eps, window=None, group=None):
  """Logits float64[T, vocab] of a one-layer LLaMA (params as `spec.to_params`, layer axis 1)."""
  p = {k: np.asarray(v, np.float64) for k, v in _flatten(params).items()}

  def layer(name):
    return p[f"layers/{name}"][0]

  x = p["embed"][np.asarray(tokens)]
  h = _rms_norm(x, layer("attention_norm/scale"), eps)
  q = np.einsum("te,ehd->thd", h, layer("attention/q"))
  k = np.einsum("te,ekd->tkd", h, layer("attention/k"))
  v = np.einsum("te,ekd->tkd", h, layer("attention/v"))
  a = attention(q, k, v, positions, inv_freq, window, group)
  x = x + np.einsum("thd,hde->te", a, layer("attention/o"))
  h = _rms_norm(x, layer("ffn_norm/scale"), eps)
  gate = h @ layer("ffn/gate")
  x = x + (gate / (1 + np.exp(-gate)) * (h @ layer("ffn/up"))) @ layer("ffn/down")
  x = _rms_norm(x, p["norm/scale"], eps)
  head = p.get("lm_head", p["embed"])
  return x @ head.T


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, dict):
      out.update(_flatten(value, name + "/"))
    else:
      out[name] = value
  return out
