"""Registry of attention kernels, keyed by `model.attention`.

A kernel is a `Kernel`: its function `fn(q, k, v, *, q_segment_ids, kv_segment_ids, q_offset,
**options)` with q[B, T, H, D], k/v[B, S, K, D] (K divides H), and what it can do:

- `segments`: honours segment ids (packed documents, padding); a kernel that cannot is never
  given them silently — it refuses them itself with an error naming the alternatives;
- `decoding`: attends a few queries against a longer key cache at a (possibly traced)
  `q_offset`; dispatch hands cached decoding of the other kernels to `chunked`;
- `prefix`: takes `shared_prefix=n`, n leading keys that every query sees whatever the
  segment ids (prefix tuning's virtual tokens, `model.KeyValuePrefix`); the call puts the
  queries after them (`q_offset` >= n). Kernels without it are never given a prefix: the
  adapter that needs one refuses them (`llama_jax.adapters.prefix`);
- `options`: the keyword options it takes from the model config (e.g. `block_size`);
- `self_extend`: merges Self-Extend's neighbour and grouped scores (`self_extend.py`): it takes
  a `grouped` argument (a `self_extend.Grouped`); the others refuse Self-Extend;
- `backends`: where it runs natively (empty: everywhere).

Adding a kernel is one module in this package that registers its record; the package imports
every module, `model.attention` then accepts the name and validation lists it.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

from llama_jax.core.registry import Registry


@dataclasses.dataclass(frozen=True)
class Kernel:
  name: str
  fn: Callable
  segments: bool = True
  decoding: bool = True
  prefix: bool = False
  options: tuple[str, ...] = ()
  backends: tuple[str, ...] = ()
  self_extend: bool = False
  description: str = ""


KERNELS: Registry[Kernel] = Registry("attention kernel", "model.attention")
register = KERNELS.register


def self_extend_kernels() -> list[str]:
  """Names of the kernels that implement Self-Extend."""
  return [k.name for k in KERNELS.entries() if k.self_extend]
