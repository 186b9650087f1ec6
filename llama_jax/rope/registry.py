"""Registry of RoPE context-extension methods, keyed by `rope_type`.

A method is a `RopeMethod`: which config fields it requires and accepts, a validator for their
values, and `frequencies(rope, head_dim, seq_len, values) -> (inv_freq, attention_scaling)`.
`inv_freq` is float32 `[..., head_dim // 2]` and `attention_scaling` float32 `[...]`, where the
leading dims are those of `seq_len` (the length each sequence has, i.e. max position + 1). Static
methods ignore `seq_len`; methods that depend on it set `depends_on_length=True`, which tells the
KV cache to store keys before rotation and re-rotate them as the length grows (the paper-correct
behaviour for dynamic scaling).

Traced values. `traced` names the method's numeric fields that may also arrive as arrays, one
value per example (`inputs.RopeInputs`), so a new value never recompiles; everything else in
the config (the type, head_dim, lengths, betas) is structure. `frequencies` reads those fields
only from `values` (`resolve_values`: the input array when given, else the config's constant,
broadcast to the leading shape), never from `rope`, so one piece of code serves both paths. A
traced field must enter the computation through IEEE arithmetic only (+, -, *, and a division
written as a product with the reciprocal), so that an array gives the same bits as the config's
constant: XLA folds constants at compile time and rewrites x / c as x * (1 / c) (on XLA:CPU,
θ / s differed from θ / s-as-an-array in the last bit for 189 of 200 values of s), and it
evaluates a transcendental function of a constant with other code than of an array (0.1 ln s
+ 1, YaRN's temperature: 15 of 200 differed). So `factor` stays static where it enters through a
logarithm or a power (yarn, longrope's default attention factor, ntk).

Adding a method is one new module in this package that calls `register`; the package imports
every module in it (`core.registry`'s idiom), so nothing else needs editing.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

from llama_jax.core.registry import Registry
from llama_jax.rope.config import FIELDS, RopeConfig

FrequencyFn = Callable[[RopeConfig, int, jax.Array, Mapping[str, jax.Array]],
                       tuple[jax.Array, jax.Array]]
# Traced fields holding one value per rotation pair ([..., head_dim // 2]); the others are scalars.
VECTOR_FIELDS = ("short_factor", "long_factor")

# Fields any method may carry without using them: the base, the model's length, and the type.
_ALWAYS_ALLOWED = ("rope_type", "rope_theta", "max_position_embeddings")


@dataclasses.dataclass(frozen=True)
class RopeMethod:
  name: str
  frequencies: FrequencyFn
  required: tuple[str, ...] = ()
  optional: tuple[str, ...] = ()
  depends_on_length: bool = False
  check: Callable[[RopeConfig, int], None] | None = None
  description: str = ""
  traced: tuple[str, ...] = ()  # fields that may be per-example arrays (see the module doc)


METHODS: Registry[RopeMethod] = Registry("RoPE method", "rope.rope_type")


def register(method: RopeMethod) -> RopeMethod:
  for name in method.required + method.optional:
    if name not in FIELDS:
      raise ValueError(f"rope method {method.name!r} names unknown field {name!r}")
  for name in method.traced:
    if name not in method.required + method.optional:
      raise ValueError(f"rope method {method.name!r} traces {name!r}, which it does not accept")
  return METHODS.register(method)


names = METHODS.names
get = METHODS.get


def validate(rope: RopeConfig, head_dim: int) -> RopeMethod:
  """Raises ValueError naming the field, its value and what is allowed; returns the method."""
  method = get(rope.rope_type)
  if not (isinstance(rope.rope_theta, (int, float)) and rope.rope_theta > 1):
    raise ValueError(f"rope.rope_theta={rope.rope_theta!r} must be a number > 1")
  if head_dim % 2:
    raise ValueError(f"head_dim={head_dim} must be even for rotary embeddings")
  for name in method.required:
    if name == "original_max_position_embeddings":
      missing = rope.original_length is None
    else:
      missing = getattr(rope, name) is None
    if missing:
      raise ValueError(
          f"rope.{name} is required for rope_type={rope.rope_type!r} (it is None); "
          f"this method needs {list(method.required)}")
  allowed = set(_ALWAYS_ALLOWED + method.required + method.optional)
  extra = [f for f in FIELDS if f not in allowed and getattr(rope, f) is not None]
  if extra:
    raise ValueError(
        f"rope fields {extra} are set but rope_type={rope.rope_type!r} does not use them; "
        f"it accepts {sorted(allowed)}")
  if rope.factor is not None and not rope.factor > 0:
    raise ValueError(f"rope.factor={rope.factor!r} must be > 0")
  if method.check is not None:
    method.check(rope, head_dim)
  return method


def base_inv_freq(theta: float, head_dim: int) -> jax.Array:
  """θ_i = b^(-2i/d) in float32, formed as HF forms it (integer arange / d, then the power)."""
  exponent = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
  return 1.0 / (jnp.float32(theta) ** exponent)


def broadcast(inv_freq: jax.Array, scaling, seq_len: jax.Array):
  """Gives static results the leading shape of `seq_len`."""
  lead = jnp.shape(seq_len)
  inv_freq = jnp.broadcast_to(inv_freq.astype(jnp.float32), lead + inv_freq.shape[-1:])
  scaling = jnp.broadcast_to(jnp.asarray(scaling, jnp.float32), lead)
  return inv_freq, scaling


def resolve_values(rope: RopeConfig, method: RopeMethod, head_dim: int, lead: tuple[int, ...],
                   given: Mapping[str, jax.Array | None] | None = None) -> dict[str, jax.Array]:
  """The method's traced fields as float32 arrays of shape `lead` (`lead + (head_dim // 2,)`
  for the vector fields): the `given` array when there is one, else the config's value; fields
  that are None in both are left out (the method then applies its default)."""
  out = {}
  for name in method.traced:
    value = None if given is None else given.get(name)
    if value is None:
      value = getattr(rope, name)
    if value is None:
      continue
    shape = lead + ((head_dim // 2,) if name in VECTOR_FIELDS else ())
    out[name] = jnp.broadcast_to(jnp.asarray(value, jnp.float32), shape)
  return out
