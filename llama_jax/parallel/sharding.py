"""Shardings of pytrees and batches on a mesh (`parallel.mesh`).

The model only names its dimensions (`logical_axes` metadata on every `nnx.Param`); this module
turns those names into `NamedSharding`s through the rules table of `logical_axes.py`:

- `tree_shardings` gives a `NamedSharding` for every leaf of an abstract pytree (the output of
  `jax.eval_shape`), so state is created directly sharded with `jit(..., out_shardings=...)`.
  Leaves inside an `nnx.Variable` use its `logical_axes`; other leaves whose dict-key path ends
  with a known parameter path and has the same rank (optax `mu`/`nu` of a plain-dict parameter
  tree) borrow that parameter's axes; everything else (step counters, RNG keys) is replicated.
- `global_batch` assembles per-process NumPy batches into global arrays.
"""
from __future__ import annotations

import collections
import math
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from llama_jax.parallel import logical_axes
from llama_jax.parallel.logical_axes import Rules


# ------------------------------------------------------------------------------ pytrees
def _dict_path(path) -> tuple[str, ...]:
  """The dict keys along a key path; attribute and sequence entries are dropped."""
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))


def _is_variable(x) -> bool:
  return isinstance(x, nnx.Variable)


def param_logical_axes(tree) -> dict[str, tuple]:
  """{"layers/attention/q": logical axes} for every nnx.Variable in `tree` that carries them.

  `tree` may be a model (abstract or real), an nnx.State, or any pytree containing Variables.
  """
  if isinstance(tree, nnx.Module):
    tree = nnx.state(tree)
  found = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)[0]:
    axes = getattr(leaf, "logical_axes", None) if _is_variable(leaf) else None
    if axes is not None:
      found.setdefault("/".join(_dict_path(path)), tuple(axes))
  return found


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh) -> P:
  """Drops mesh axes from dimensions they do not divide (those dimensions stay whole)."""
  out = []
  for dim, entry in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
    kept = []
    for a in axes:
      if dim % (math.prod(mesh.shape[k] for k in kept) * mesh.shape[a]) == 0:
        kept.append(a)
    out.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return P(*out)


def logical_sharding(names, shape, mesh: Mesh, rules: Rules) -> NamedSharding:
  """NamedSharding for an array of `shape` whose dimensions have logical `names`."""
  names = tuple(names)
  if len(names) != len(shape):
    raise ValueError(f"logical axes {names} do not match the array rank {len(shape)} "
                     f"(shape {tuple(shape)})")
  return NamedSharding(mesh, _fit_spec(logical_axes.spec(names, rules), tuple(shape), mesh))


def tree_shardings(abstract_tree, mesh: Mesh, rules: Rules, param_axes=None):
  """A NamedSharding for every leaf of `abstract_tree`, in the same tree structure.

  Works on `jax.eval_shape` outputs (ShapeDtypeStruct leaves) and on real arrays, so the result
  can be `out_shardings` of the jitted initialiser. Axes come from (1) the `logical_axes` of the
  enclosing nnx.Variable; (2) for plain leaves, the longest known parameter path that is a suffix
  of the leaf's dict-key path with matching rank — known paths are those of the Variables in the
  tree plus `param_axes` (a {path: axes} dict, a model or an nnx.State); (3) otherwise replicated.
  A mesh axis that does not divide a dimension is dropped for that dimension.
  """
  known = param_logical_axes(abstract_tree)
  if param_axes is not None:
    extra = param_axes if isinstance(param_axes, Mapping) and not isinstance(
        param_axes, nnx.State) else param_logical_axes(param_axes)
    for k, v in extra.items():
      known.setdefault(k, tuple(v))
  by_suffix = sorted(((tuple(k.split("/")), v) for k, v in known.items()),
                     key=lambda kv: -len(kv[0]))
  replicated = NamedSharding(mesh, P())

  def for_leaf(path, leaf, names=None):
    shape = tuple(getattr(leaf, "shape", ()))
    if not shape:
      return replicated
    if names is None:
      keys = _dict_path(path)
      for suffix, axes in by_suffix:
        if len(axes) == len(shape) and keys[len(keys) - len(suffix):] == suffix:
          names = axes
          break
    if names is None or len(names) != len(shape):
      return replicated
    return logical_sharding(names, shape, mesh, rules)

  def visit(path, node):
    if _is_variable(node):
      names = getattr(node, "logical_axes", None)
      return jax.tree_util.tree_map_with_path(
          lambda p, leaf: for_leaf(path + p, leaf, names), node)
    return for_leaf(path, node)

  return jax.tree_util.tree_map_with_path(visit, abstract_tree, is_leaf=_is_variable)


def with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying `shardings` (what orbax restore and AOT compilation take)."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)


# ------------------------------------------------------------------------------ batches
def batch_sharding(mesh: Mesh, rules: Rules) -> NamedSharding:
  """NamedSharding of a [batch, length] array (logical names "batch", "length")."""
  return NamedSharding(mesh, logical_axes.spec(("batch", "length"), rules))


def _batch_blocks(mesh: Mesh, spec: P) -> tuple[int, int]:
  """(batch shards in the mesh, distinct batch shards addressed by this process)."""
  entry = spec[0] if len(spec) else None
  axes = () if entry is None else ((entry,) if isinstance(entry, str) else tuple(entry))
  total = math.prod(mesh.shape[a] for a in axes)
  if not axes:
    return 1, 1
  pid = jax.process_index()
  dims = [mesh.axis_names.index(a) for a in axes]
  local = {tuple(idx[d] for d in dims) for idx in np.ndindex(mesh.devices.shape)
           if mesh.devices[idx].process_index == pid}
  return total, len(local)


def global_batch(local_batch: Mapping[str, np.ndarray], mesh: Mesh, rules: Rules) -> dict:
  """Per-process NumPy arrays {name: [local_rows, ...]} → global jax.Arrays on `mesh`.

  Dimension 0 is the batch (sharded as "batch"), dimension 1 the length ("length"); further
  dimensions are replicated. Each process passes its own rows (those its devices hold, in
  process order, as the data loader's per-process shard gives them).
  """
  spec = logical_axes.spec(("batch", "length"), rules)
  total, local = _batch_blocks(mesh, spec)
  out = {}
  for name, array in local_batch.items():
    array = np.asarray(array)
    if array.ndim == 0:
      raise ValueError(f"batch[{name!r}] is a scalar; batch arrays need a leading batch axis")
    if array.shape[0] % local:
      raise ValueError(
          f"batch[{name!r}] has {array.shape[0]} rows on process {jax.process_index()}, not "
          f"divisible by the {local} batch shards this process holds")
    rows = array.shape[0] // local * total
    leaf_spec = P(*(tuple(spec) + (None,) * array.ndim)[:array.ndim])
    sharding = NamedSharding(mesh, _fit_spec(leaf_spec, (rows,) + array.shape[1:], mesh))
    out[name] = jax.make_array_from_process_local_data(
        sharding, array, (rows,) + array.shape[1:])
  return out


def bytes_per_device(tree) -> dict:
  """{device: bytes of `tree`'s array shards resident on it} over this process's devices."""
  totals = collections.Counter()
  for leaf in jax.tree.leaves(tree):
    if isinstance(leaf, jax.Array):
      for shard in leaf.addressable_shards:
        totals[shard.device] += shard.data.nbytes
  return dict(totals)
