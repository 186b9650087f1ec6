"""LLaMA (Touvron et al. 2023, §2) in Flax NNX.

A decoder-only transformer with three changes to the original: pre-normalisation with RMSNorm,
the SwiGLU feed-forward, and rotary position embeddings — plus grouped-query attention (Llama 2
70B, Llama 3) and no biases anywhere. Numerically it follows HF `LlamaForCausalLM`: RMSNorm in
float32, the norm weight applied after casting back, softmax in float32.

Layout decisions:
- Every parameter carries `logical_axes` metadata; `logical_axes.py` maps names to a mesh.
- The L blocks are one `Block` whose parameters have a leading `layers` axis. The forward pass
  scans over it (or unrolls it, `scan_layers=False`): one parameter layout for both, so
  checkpoints never depend on that choice.
- Projections keep heads as their own axis (q: [embed, heads, head_dim]) so tensor parallelism
  shards heads without reshapes; they run as one 2-D GEMM each (`project`). The output
  projection is stored [vocab, embed], like the embedding it may be tied to (and HF's lm_head).
- RoPE uses HF's rotate-half layout (HF checkpoints convert by transpose; Meta ones need the q/k
  row permutation, `interop/meta.py`). The model asks `llama_jax.rope` for cos/sin and never
  branches on the method; per-example RoPE values (`rope.RopeInputs`: PI scale, offset, factors)
  are passed through as arrays, so new values do not recompile.
- With a `KVCache`, keys are cached after rotation for static RoPE methods and before rotation
  for length-dependent ones (dynamic NTK, dynamic YaRN, LongRoPE), which are then re-rotated with
  the current length at every step — the YaRN paper's correct behaviour (HF caches rotated keys).
- Self-Extend (`model.self_extend_window/group`, `attention/self_extend.py`) rotates queries and
  keys a second time at grouped positions and hands both to the attention kernel; with a
  `KVCache` it caches keys before rotation (both rotations are redone from the cached positions).
- Seams for PEFT adapters, which are installed from outside (`llama_jax.adapters`) and never
  branched on here: every projection runs through a parameterless `Linear` module next to its
  weight (`Attention.q_proj` applies `Attention.q`, ...), every attention layer asks its
  `KeyValuePrefix` for keys/values that all queries see ahead of the sequence (none by
  default), and `Llama.position_offset` counts the virtual tokens such a prefix stands for
  (the input's positions start after them, as HF derives positions from the cache length). An
  installer replaces a seam with a module of the same call signature that holds its own
  parameters; the base parameters keep their paths. `features(..., rng=key)` hands every layer
  its own key for stochastic seams (adapter dropout); without it everything is deterministic.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from llama_jax import attention as attention_lib
from llama_jax import rope as rope_lib
from llama_jax.attention import self_extend
from llama_jax.core.errors import DataError
from llama_jax.model.config import ModelConfig
from llama_jax.model.remat import remat
from llama_jax.parallel.logical_axes import Rules, constrain


def _param(rngs, shape, axes, std, dtype):
  return nnx.Param(std * jax.random.normal(rngs.params(), shape, jnp.dtype(dtype)),
                   logical_axes=axes)


class RMSNorm(nnx.Module):
  """x / sqrt(mean(x²) + ε) · g, reduced in float32 (Zhang & Sennrich 2019)."""

  def __init__(self, dim: int, eps: float, *, stack: tuple[int, ...] = (), param_dtype="float32"):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones(stack + (dim,), jnp.dtype(param_dtype)),
                           logical_axes=("layers",) * len(stack) + ("norm",))

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return self.scale[...].astype(x.dtype) * y.astype(x.dtype)


def project(x: jax.Array, w: jax.Array, n_in: int) -> jax.Array:
  """x[..., *w.shape[:n_in]] contracted with w[*in, *out] -> [..., *out], as one 2-D matmul.

  Why not an einsum over [batch, seq, ...]: the weight gradient then contracts over batch *and*
  sequence, and XLA:CPU makes that a GEMM only after transposing the activation gradient (a
  strided copy the size of the activations, for every projection). Collapsing the leading axes
  first keeps all three matmuls of each projection (forward, input and weight gradients) plain
  GEMMs on every backend; the reshapes are free.
  """
  lead, w_in, w_out = x.shape[:x.ndim - n_in], w.shape[:n_in], w.shape[n_in:]
  y = x.reshape(-1, math.prod(w_in)) @ w.reshape(math.prod(w_in), math.prod(w_out))
  return y.reshape(*lead, *w_out)


class Linear(nnx.Module):
  """The seam of one projection: x · w, contracting x's last `n_in` axes with w's first.

  The weight stays a parameter of the owning module; this module has none. Adapters replace it
  with a module taking the same (x, w, ctx) that adds its own parameters and terms.
  """

  def __init__(self, n_in: int = 1):
    self.n_in = n_in

  def __call__(self, x, w, ctx=None):
    return project(x, w.astype(x.dtype), self.n_in)


class KeyValuePrefix(nnx.Module):
  """The seam for `length` keys/values put ahead of the sequence, visible to every query.

  None by default; prefix tuning replaces it with one that holds per-layer virtual tokens.
  `__call__(k, v, kv_segment_ids)` returns the keys, values and key segment ids to attend to.
  """
  length = 0

  def __call__(self, k, v, kv_segment_ids):
    return k, v, kv_segment_ids


class FeedForward(nnx.Module):
  """SwiGLU (Shazeer 2020): W_down(SiLU(W_gate x) ⊙ W_up x)."""

  def __init__(self, cfg: ModelConfig, *, stack=(), rngs: nnx.Rngs):
    lead = ("layers",) * len(stack)
    d, f, std, pd = cfg.d_model, cfg.ffn_dim, cfg.init_std, cfg.param_dtype
    self.gate = _param(rngs, stack + (d, f), lead + ("embed", "mlp"), std, pd)
    self.up = _param(rngs, stack + (d, f), lead + ("embed", "mlp"), std, pd)
    self.down = _param(rngs, stack + (f, d), lead + ("mlp", "embed"), std, pd)
    self.gate_proj, self.up_proj, self.down_proj = Linear(1), Linear(1), Linear(1)

  def __call__(self, x, ctx=None):
    gate = checkpoint_name(self.gate_proj(x, self.gate[...], ctx), "mlp_gate")
    up = checkpoint_name(self.up_proj(x, self.up[...], ctx), "mlp_up")
    hidden = jax.nn.silu(gate) * up
    return self.down_proj(hidden, self.down[...], ctx)


class Context(NamedTuple):
  """Per-call inputs shared by all layers (positions already turned into cos/sin)."""
  cos: jax.Array  # f32[B, T, head_dim], queries (and keys when not caching)
  sin: jax.Array
  q_segment_ids: jax.Array | None
  kv_segment_ids: jax.Array | None
  q_offset: jax.Array | int  # key index of the first query
  key_cos: jax.Array | None  # f32[B, S, head_dim] to re-rotate pre-RoPE cached keys
  key_sin: jax.Array | None
  # Self-Extend: cos/sin at the queries' and the keys' grouped positions (None when off).
  group_cos: jax.Array | None = None  # f32[B, T, head_dim]
  group_sin: jax.Array | None = None
  key_group_cos: jax.Array | None = None  # f32[B, S, head_dim]
  key_group_sin: jax.Array | None = None
  rng: jax.Array | None = None  # this layer's key for stochastic seams; None: deterministic
  # With a KVCache: keys are cached before rotation (length-dependent RoPE, Self-Extend), and
  # whether the cache was empty (a prefill), so the tokens attend only to their own keys.
  pre_rope: bool = False
  prefill: bool = False


class Attention(nnx.Module):
  """Multi-head attention with grouped-query heads and rotary positions."""

  def __init__(self, cfg: ModelConfig, *, stack=(), rngs: nnx.Rngs):
    lead = ("layers",) * len(stack)
    d, h, k, hd, std, pd = (cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                            cfg.init_std, cfg.param_dtype)
    self.q = _param(rngs, stack + (d, h, hd), lead + ("embed", "heads", "head_dim"), std, pd)
    self.k = _param(rngs, stack + (d, k, hd), lead + ("embed", "kv_heads", "head_dim"), std, pd)
    self.v = _param(rngs, stack + (d, k, hd), lead + ("embed", "kv_heads", "head_dim"), std, pd)
    self.o = _param(rngs, stack + (h, hd, d), lead + ("heads", "head_dim", "embed"), std, pd)
    self.q_proj, self.k_proj, self.v_proj, self.o_proj = Linear(1), Linear(1), Linear(1), Linear(2)
    self.prefix = KeyValuePrefix()
    self.impl = cfg.attention
    self.block_size = cfg.attention_block_size
    self.self_extend_window = cfg.self_extend_window

  def __call__(self, x, ctx: Context, kv_cache=None, cache_index=None):
    dt = x.dtype
    q = self.q_proj(x, self.q[...], ctx)
    k = self.k_proj(x, self.k[...], ctx)
    v = self.v_proj(x, self.v[...], ctx)
    q_raw, k_raw = q, k  # before rotation (Self-Extend rotates them a second way)
    q = checkpoint_name(rope_lib.apply(q, ctx.cos, ctx.sin), "query")
    if kv_cache is None:
      k = checkpoint_name(rope_lib.apply(k, ctx.cos, ctx.sin), "key")
      v = checkpoint_name(v, "value")
      new_cache = None
    else:
      pre_rope = ctx.pre_rope
      k_store = k if pre_rope else rope_lib.apply(k, ctx.cos, ctx.sin)
      # kv_cache = (keys, values, layer): every layer's [L, B, K, S, D] cache and this layer's
      # index. Only the new slots are written, in place. Reading the layer's slice of the stack
      # is still a copy on XLA:CPU, which is why decode loops use the per-layer form below.
      # (Slicing the layer's cache out and stacking it back made every decoded token copy the
      # whole cache two or three times.)
      # The cache is head-major ([L, B, K, S, D], as the attention matmuls read it), so the
      # kernel's [B, S, K, D] view below is a transpose XLA folds into them, not a copy.
      # `layer` None: k_all/v_all are this layer's own [B, K, S, D] arrays (the per-layer form
      # of `KVCache.per_layer`), read and written with no slice of a stack copied out.
      k_all, v_all, layer = kv_cache
      lead = () if layer is None else (layer,)
      start = (*lead, 0, 0, cache_index, 0)
      head_major = lambda a, like: a.swapaxes(1, 2)[(None,) * len(lead)].astype(like.dtype)
      k_all = jax.lax.dynamic_update_slice(k_all, head_major(k_store, k_all), start)
      v_all = jax.lax.dynamic_update_slice(v_all, head_major(v, v_all), start)
      new_cache = (k_all, v_all)
      if ctx.prefill:
        # The cache held nothing before these tokens, so their own keys are all they can see:
        # attending to them alone, at a static offset 0, lets the kernel skip causally
        # masked blocks (and `auto` pick the training kernels, linear in memory for long
        # prompts) instead of scoring every slot of the cache.
        k = rope_lib.apply(k, ctx.cos, ctx.sin) if pre_rope else k_store
      else:
        layer_of = lambda a: a if layer is None else jax.lax.dynamic_index_in_dim(
            a, layer, 0, keepdims=False)
        k_cache, v_cache = layer_of(k_all).swapaxes(1, 2), layer_of(v_all).swapaxes(1, 2)
        k_raw = k_cache.astype(dt)
        k = rope_lib.apply(k_cache, ctx.key_cos, ctx.key_sin) if pre_rope else k_cache
        k, v = k.astype(dt), v_cache.astype(dt)
    grouped = None
    if ctx.group_cos is not None:
      grouped = attention_lib.Grouped(
          q=rope_lib.apply(q_raw, ctx.group_cos, ctx.group_sin),
          k=rope_lib.apply(k_raw, ctx.key_group_cos, ctx.key_group_sin),
          window=self.self_extend_window)
    n_prefix = self.prefix.length
    k, v, kv_segment_ids = self.prefix(k, v, ctx.kv_segment_ids)
    out = attention_lib.dot_product_attention(
        q, k, v, impl=self.impl, q_segment_ids=ctx.q_segment_ids, kv_segment_ids=kv_segment_ids,
        q_offset=ctx.q_offset + n_prefix, shared_prefix=n_prefix, block_size=self.block_size,
        grouped=grouped)
    out = checkpoint_name(out, "attention")
    return self.o_proj(out, self.o[...], ctx), new_cache


class Block(nnx.Module):
  """h = x + Attention(RMSNorm(x)); out = h + FeedForward(RMSNorm(h))."""

  def __init__(self, cfg: ModelConfig, *, stack=(), rngs: nnx.Rngs):
    self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps, stack=stack,
                                  param_dtype=cfg.param_dtype)
    self.attention = Attention(cfg, stack=stack, rngs=rngs)
    self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps, stack=stack, param_dtype=cfg.param_dtype)
    self.ffn = FeedForward(cfg, stack=stack, rngs=rngs)

  def __call__(self, x, ctx: Context, kv_cache=None, cache_index=None):
    attn, new_cache = self.attention(self.attention_norm(x), ctx, kv_cache, cache_index)
    h = x + attn
    return h + self.ffn(self.ffn_norm(h), ctx), new_cache


@flax.struct.dataclass
class KVCache:
  """Preallocated keys/values for all layers, plus per-slot segment ids and positions."""
  k: jax.Array  # [L, B, K, S, head_dim]: head-major, the layout attention reads; or a tuple of
  v: jax.Array  # L arrays [B, K, S, head_dim] (`per_layer`, what decode loops use)
  segment_ids: jax.Array  # int32[B, S]; 0 = empty or padding
  positions: jax.Array  # int32[B, S]
  index: jax.Array  # int32[]: next slot to write

  @classmethod
  def init(cls, cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
    dtype = jnp.dtype(dtype or cfg.dtype)
    shape = (cfg.n_layers, batch, cfg.n_kv_heads, max_len, cfg.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               segment_ids=jnp.zeros((batch, max_len), jnp.int32),
               positions=jnp.zeros((batch, max_len), jnp.int32), index=jnp.zeros((), jnp.int32))

  @property
  def max_len(self) -> int:
    return (self.k[0].shape[2] if isinstance(self.k, tuple) else self.k.shape[3])

  def per_layer(self) -> KVCache:
    """The same cache with keys and values as one [B, K, S, D] array per layer (tuples).

    A decode loop converts once, before it starts: each layer then reads and writes its own
    buffer, where the stacked form costs every decoded token a copy of each layer's slice
    (XLA:CPU materialises the slice a matmul reads). `Llama` accepts either form.
    """
    if isinstance(self.k, tuple):
      return self
    return self.replace(k=tuple(self.k), v=tuple(self.v))


class Llama(nnx.Module):
  """Token ids [B, T] → logits float32[B, T, vocab]."""

  def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs, rules: Rules | None = None):
    self.cfg = cfg
    self.rules = rules  # logical→mesh rules for activation constraints; None off-mesh
    pd = cfg.param_dtype
    self.embed = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"), cfg.init_std, pd)
    self.layers = Block(cfg, stack=(cfg.n_layers,), rngs=rngs)
    self.norm = RMSNorm(cfg.d_model, cfg.norm_eps, param_dtype=pd)
    if not cfg.tie_embeddings:
      self.lm_head = _param(rngs, (cfg.vocab_size, cfg.d_model), ("vocab", "embed"),
                            cfg.init_std, pd)
    self.position_offset = 0  # virtual tokens ahead of every sequence (see KeyValuePrefix)

  def _context(self, positions, segment_ids, cache: KVCache | None, rope_inputs=None,
               prefill: bool = False):
    cfg = self.cfg
    method = rope_lib.get(cfg.rope.rope_type)
    seq_len = rope_lib.embedding.sequence_length(positions)
    cos, sin = rope_lib.cos_sin(cfg.rope, cfg.head_dim, positions, seq_len, rope_inputs)

    def grouped(key_positions):  # Self-Extend's tables (keyword arguments of Context)
      if not cfg.self_extend:
        return {}
      w, g = cfg.self_extend_window, cfg.self_extend_group
      q_cos, q_sin = rope_lib.cos_sin(cfg.rope, cfg.head_dim,
                                      self_extend.query_positions(positions, w, g), seq_len,
                                      rope_inputs)
      k_cos, k_sin = rope_lib.cos_sin(cfg.rope, cfg.head_dim,
                                      self_extend.key_positions(key_positions, g), seq_len,
                                      rope_inputs)
      return dict(group_cos=q_cos, group_sin=q_sin, key_group_cos=k_cos, key_group_sin=k_sin)

    if cache is None:
      ctx = Context(cos, sin, segment_ids, segment_ids, 0, None, None, **grouped(positions))
      return ctx, None
    b, t = positions.shape
    q_seg = jnp.ones((b, t), jnp.int32) if segment_ids is None else segment_ids
    kv_seg = jax.lax.dynamic_update_slice(cache.segment_ids, q_seg, (0, cache.index))
    kv_pos = jax.lax.dynamic_update_slice(cache.positions, positions.astype(jnp.int32),
                                          (0, cache.index))
    index, cache = cache.index, cache.replace(segment_ids=kv_seg, positions=kv_pos,
                                              index=cache.index + t)
    pre_rope = method.depends_on_length or cfg.self_extend  # cache keys before rotation
    if prefill:  # the keys are the tokens' own (see Attention)
      ctx = Context(cos, sin, q_seg, q_seg, 0, None, None, **grouped(positions),
                    pre_rope=pre_rope, prefill=True)
      return ctx, cache
    key_cos = key_sin = None
    if pre_rope:
      key_cos, key_sin = rope_lib.cos_sin(cfg.rope, cfg.head_dim, kv_pos, seq_len, rope_inputs)
    ctx = Context(cos, sin, q_seg, kv_seg, index, key_cos, key_sin, **grouped(kv_pos),
                  pre_rope=pre_rope)
    return ctx, cache

  def __call__(self, tokens, positions=None, segment_ids=None, cache: KVCache | None = None,
               rope_inputs: rope_lib.RopeInputs | None = None, prefill: bool = False):
    """Returns logits, or (logits, updated cache) when a cache is passed.

    positions default to 0..T-1 (offset by the cache index when decoding); segment_ids mark
    packed documents (attention never crosses them) and padding (0). rope_inputs: per-example
    (or shared) RoPE values as arrays (`rope.inputs`), e.g. a PI scale; with a cache they must
    stay the same for the whole sequence (cached keys were rotated with them). `prefill=True`
    promises that the cache is empty (index 0, as `KVCache.init` makes it): the tokens then
    attend only to each other, with the kernels training uses, instead of to every cache slot.
    """
    x, new_cache = self.features(tokens, positions, segment_ids, cache, rope_inputs,
                                 prefill=prefill)
    b, t, d = x.shape
    logits = jnp.matmul(x.reshape(b * t, d), self.head().astype(x.dtype).T,
                        preferred_element_type=jnp.float32).reshape(b, t, -1)
    logits = constrain(logits, ("act_batch", "act_length", "act_vocab"), self.rules)
    return logits if cache is None else (logits, new_cache)

  def head(self) -> jax.Array:
    """The output projection as [vocab, d_model] rows (the embedding itself when tied).

    Stored vocab-major like the embedding (and HF's lm_head): the weight gradient g^T x then
    comes out of the GEMM in the parameter's own layout; [d_model, vocab] costs a transposed
    GEMM that runs at ~60% of the speed on XLA:CPU (measured on configs/bench_34m.py).
    """
    return self.embed[...] if self.cfg.tie_embeddings else self.lm_head[...]

  def features(self, tokens, positions=None, segment_ids=None, cache: KVCache | None = None,
               rope_inputs: rope_lib.RopeInputs | None = None, rng: jax.Array | None = None,
               prefill: bool = False, layers: tuple | None = None):
    """The final-normed hidden states [B, T, d_model] before the output projection.

    Training uses these with `loss.cross_entropy`, so the [B, T, vocab] logits of a
    long sequence never exist at once. Returns (hidden, updated cache or None). `rng` (training
    only) is split into one key per layer for stochastic seams such as adapter dropout.
    `prefill`: see `__call__`. `layers`: `layer_states()` computed once outside a decode loop,
    so the loop does not slice (copy) every layer's weights out of the stack at each token.
    """
    cfg = self.cfg
    tokens = token_ids(tokens, cfg.vocab_size)
    b, t = tokens.shape
    if positions is None:
      start = 0 if cache is None else cache.index
      positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32) + start, (b, t))
    positions = positions + self.position_offset
    if prefill and cache is None:
      raise ValueError("prefill=True fills a KVCache: pass the (empty) cache")
    ctx, new_cache = self._context(positions, segment_ids, cache, rope_inputs, prefill)
    dt = jnp.dtype(cfg.dtype)
    # Gather the table's fsdp shards first (ZeRO-3 style): looking rows up in a table whose
    # embed axis is split over the same mesh axis as the batch forces XLA to replicate it.
    table = constrain(self.embed[...], ("vocab", "act_embed"), self.rules)
    x = jnp.take(table, tokens, axis=0).astype(dt)
    x = constrain(x, ("act_batch", "act_length", "act_embed"), self.rules)

    graphdef, layer_state = nnx.split(self.layers)
    rules = self.rules
    cache_index = None if cache is None else cache.index

    def layer(x, xs):
      state, k_cache, v_cache, key = xs
      block = nnx.merge(graphdef, state)
      kv = None if cache is None else (k_cache, v_cache)
      x, kv = block(x, ctx if key is None else ctx._replace(rng=key), kv, cache_index)
      return constrain(x, ("act_batch", "act_length", "act_embed"), rules), kv

    if cache is not None:  # the whole cache is carried through the layers, updated in place
      x, kv = self._cached_layers(x, graphdef, layer_state, (cache.k, cache.v), ctx,
                                  cache_index, layers)
      return self.norm(x), new_cache.replace(k=kv[0], v=kv[1])

    layer = remat(layer, cfg.remat)
    cache_kv = (None, None)
    keys = None if rng is None else jax.random.split(rng, cfg.n_layers)
    if cfg.scan_layers:
      x, kv = jax.lax.scan(layer, x, (layer_state, *cache_kv, keys))
    else:
      for i in range(cfg.n_layers):
        xs = jax.tree.map(lambda a, i=i: a[i], (layer_state, *cache_kv, keys))
        x, _ = layer(x, xs)
    return self.norm(x), new_cache

  def layer_states(self) -> tuple:
    """Each layer's parameters (and adapter parameters) as its own state, sliced out of the
    stack once: what a decode loop passes as `features(layers=...)`."""
    _, layer_state = nnx.split(self.layers)
    return tuple(jax.tree.map(lambda a, i=i: a[i], layer_state) for i in range(self.cfg.n_layers))

  def _cached_layers(self, x, graphdef, layer_state, kv, ctx, cache_index, layers=None):
    """The layers with a KV cache: (x, (keys, values)) with each layer's new slots written.

    A per-layer cache (`KVCache.per_layer`) runs the layers unrolled, each on its own buffers;
    a stacked cache is carried whole, through a scan or (unrolled layers, or per-layer states
    given) a Python loop."""
    rules = self.rules
    keep = lambda x: constrain(x, ("act_batch", "act_length", "act_embed"), rules)
    if isinstance(kv[0], tuple):
      ks, vs = list(kv[0]), list(kv[1])
      for i, state in enumerate(layers or self.layer_states()):
        x, (ks[i], vs[i]) = nnx.merge(graphdef, state)(x, ctx, (ks[i], vs[i], None), cache_index)
        x = keep(x)
      return x, (tuple(ks), tuple(vs))

    def layer(carry, xs):
      x, k_all, v_all = carry
      state, i = xs
      x, (k_all, v_all) = nnx.merge(graphdef, state)(x, ctx, (k_all, v_all, i), cache_index)
      return (keep(x), k_all, v_all), None

    carry = (x, *kv)
    if self.cfg.scan_layers and layers is None:
      carry, _ = jax.lax.scan(layer, carry, (layer_state, jnp.arange(self.cfg.n_layers)))
    else:
      for i, state in enumerate(layers or self.layer_states()):
        carry, _ = layer(carry, (state, i))
    return carry[0], carry[1:]


def token_ids(tokens, vocab_size: int):
  """`tokens` as an integer array [batch, seq], checked at the API boundary.

  Python lists and NumPy arrays become arrays; concrete inputs (not traced inside `jit`) must
  hold ids in [0, vocab_size): an id past the table would otherwise be clamped by the gather
  and silently return the logits of another token. Inside `jit` only shapes and dtypes can be
  checked, so traced tokens are passed through after those.
  """
  if not isinstance(tokens, (jax.Array, jax.core.Tracer)):
    tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise DataError(f"token ids must be [batch, seq] (e.g. [[1, 450, 4996]] for one sequence); "
                    f"got shape {tuple(tokens.shape)}")
  if not jnp.issubdtype(tokens.dtype, jnp.integer):
    raise DataError(f"token ids must be integers; got dtype {tokens.dtype}")
  if isinstance(tokens, jax.core.Tracer) or (isinstance(tokens, jax.Array)
                                             and not tokens.is_fully_addressable):
    return tokens
  host = np.asarray(tokens)
  if host.size and (host.min() < 0 or host.max() >= vocab_size):
    bad = int(host.min() if host.min() < 0 else host.max())
    raise DataError(f"token id {bad} is outside the model's vocabulary [0, {vocab_size}); "
                    "was the text encoded with another tokenizer?")
  return jnp.asarray(tokens)


def init(cfg: ModelConfig, seed: int = 0, rules: Rules | None = None) -> Llama:
  return Llama(cfg, rngs=nnx.Rngs(params=seed), rules=rules)
