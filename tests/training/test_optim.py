"""Schedule formula, decay/trainable masks, and AdamW against a float64 NumPy reference."""
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from llama_jax.training import optim


def optim_cfg(**overrides):
  c = dict(peak_lr=1e-3, warmup_steps=10, schedule="cosine", final_lr_fraction=0.1, b1=0.9,
           b2=0.95, eps=1e-8, weight_decay=0.1, decay_exclude=("norm", "embed"), clip_norm=1.0,
           trainable=".*")
  c.update(overrides)
  return ml_collections.ConfigDict(c)


# ------------------------------------------------------------------------------ schedule
def reference_lr(step, peak, warmup, total, final_fraction, kind):
  """The schedule written out in float64 Python from its definition."""
  final = final_fraction * peak
  if step < warmup:
    return peak * step / warmup
  if kind == "constant":
    return peak
  p = min(max((step - warmup) / (total - warmup), 0.0), 1.0)
  if kind == "cosine":
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * p))
  return peak + (final - peak) * p


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_schedule_matches_formula(kind):
  peak, warmup, total, frac = 3e-4, 100, 1100, 0.1
  schedule = optim.learning_rate_schedule(
      optim_cfg(peak_lr=peak, warmup_steps=warmup, schedule=kind, final_lr_fraction=frac),
      total)
  # warmup start / mid / end, decay mid / end, past the end
  for step in (0, 50, 99, 100, 600, 1100, 1500):
    want = reference_lr(step, peak, warmup, total, frac, kind)
    assert float(schedule(step)) == pytest.approx(want, rel=1e-6, abs=1e-12), step
  # Landmarks stated in plain numbers, independent of the reference function.
  assert float(schedule(0)) == 0.0
  assert float(schedule(50)) == pytest.approx(peak / 2, rel=1e-6)
  assert float(schedule(100)) == pytest.approx(peak, rel=1e-6)
  mid, end = {"cosine": (0.55 * peak, 0.1 * peak), "linear": (0.55 * peak, 0.1 * peak),
              "constant": (peak, peak)}[kind]
  assert float(schedule(600)) == pytest.approx(mid, rel=1e-5)
  assert float(schedule(1100)) == pytest.approx(end, rel=1e-5)
  # Traced steps give the same numbers (the optimizer calls it under jit).
  steps = jnp.arange(0, 1200, 37)
  np.testing.assert_allclose(np.asarray(jax.jit(jax.vmap(schedule))(steps)),
                             [reference_lr(int(s), peak, warmup, total, frac, kind)
                              for s in steps], rtol=1e-5, atol=1e-12)


def test_schedule_without_warmup_starts_at_peak():
  schedule = optim.learning_rate_schedule(optim_cfg(warmup_steps=0), 10)
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert float(schedule(10)) == pytest.approx(1e-4)


@pytest.mark.parametrize("field,value,message", [
    ("schedule", "exp", r"optim.schedule='exp'; allowed: \['cosine', 'linear', 'constant'\]"),
    ("warmup_steps", 100, r"optim.warmup_steps=100 must be smaller than steps=100"),
    ("warmup_steps", -1, r"optim.warmup_steps=-1 must be an integer >= 0"),
    ("peak_lr", 0.0, r"optim.peak_lr=0.0 must be > 0"),
    ("final_lr_fraction", 1.5, r"optim.final_lr_fraction=1.5; allowed: \[0, 1\]"),
    ("b2", 1.0, r"optim.b2=1.0; allowed: \[0, 1\)"),
    ("clip_norm", -1.0, r"optim.clip_norm=-1.0 must be >= 0"),
    ("trainable", "(", r"optim.trainable contains an invalid regex '\('"),
    ("decay_exclude", ("[",), r"optim.decay_exclude contains an invalid regex '\['"),
])
def test_config_errors(field, value, message):
  with pytest.raises(ValueError, match=message):
    optim.learning_rate_schedule(optim_cfg(**{field: value}), 100)


def test_constant_schedule_allows_long_warmup():
  schedule = optim.learning_rate_schedule(optim_cfg(schedule="constant", warmup_steps=20), 10)
  assert float(schedule(5)) == pytest.approx(1e-3 * 5 / 20)


# ------------------------------------------------------------------------------ masks
def model_params():
  return nnx.to_pure_dict(nnx.state(spec_lib.abstract(preset("tiny")), nnx.Param))


def paths_where(mask):
  return {optim.param_path(p) for p, m in jax.tree_util.tree_flatten_with_path(mask)[0] if m}


def test_decay_mask_default_excludes_norms_and_embedding():
  params = model_params()
  all_paths = set(optim.paths(params))
  decayed = paths_where(optim.decay_mask(params, optim_cfg().decay_exclude))
  excluded = all_paths - decayed
  assert excluded == {"embed", "layers/attention_norm/scale", "layers/ffn_norm/scale",
                      "norm/scale"}
  assert "lm_head" in decayed and "layers/ffn/down" in decayed


def test_decay_mask_follows_config():
  params = model_params()
  decayed = paths_where(optim.decay_mask(params, ("lm_head", r"^layers/ffn/")))
  assert set(optim.paths(params)) - decayed == {"lm_head", "layers/ffn/gate", "layers/ffn/up",
                                                "layers/ffn/down"}
  assert paths_where(optim.decay_mask(params, ())) == set(optim.paths(params))


def test_trainable_mask_and_count():
  params = model_params()
  mask = optim.trainable_mask(params, r"attention/(q|v)$")
  assert paths_where(mask) == {"layers/attention/q", "layers/attention/v"}
  cfg = preset("tiny")
  q_size = cfg.n_layers * cfg.d_model * cfg.n_heads * cfg.head_dim
  v_size = cfg.n_layers * cfg.d_model * cfg.n_kv_heads * cfg.head_dim
  assert spec_lib.count_params(params, mask) == q_size + v_size
  assert spec_lib.count_params(params) == cfg.num_params()


def test_trainable_matching_nothing_is_an_error():
  with pytest.raises(ValueError, match=r"optim.trainable='lora' matches no parameter; "
                     r"parameter paths are e.g. \['embed'"):
    optim.make_optimizer(optim_cfg(trainable="lora"), 100, model_params())


# ------------------------------------------------------------------------------ AdamW
def small_params(seed=0):
  rng = np.random.default_rng(seed)
  shapes = {"embed": (5, 3), "layers": {"attention": {"q": (2, 3, 2), "k": (2, 3, 2)},
                                        "ffn_norm": {"scale": (2, 3)}},
            "norm": {"scale": (3,)}, "lm_head": (5, 3)}
  return jax.tree.map(lambda s: rng.standard_normal(s).astype(np.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


def reference_adamw(params, grads_seq, cfg, total_steps, trainable_re, exclude):
  """float64 NumPy AdamW (decoupled, lr-scaled decay) with global-norm clipping over the
  trainable gradients, written from the algorithm's definition."""
  import re
  flat = {optim.param_path(p): np.asarray(x, np.float64)
          for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  train = {k for k in flat if re.search(trainable_re, k)}
  decay = {k for k in flat if not any(re.search(e, k) for e in exclude)}
  m = {k: np.zeros_like(v) for k, v in flat.items() if k in train}
  v2 = {k: np.zeros_like(v) for k, v in flat.items() if k in train}
  for t, grads in enumerate(grads_seq):
    g = {optim.param_path(p): np.asarray(x, np.float64)
         for p, x in jax.tree_util.tree_flatten_with_path(grads)[0]}
    norm = math.sqrt(sum(np.sum(g[k] ** 2) for k in train))
    scale = min(1.0, cfg.clip_norm / norm) if cfg.clip_norm > 0 else 1.0
    lr = reference_lr(t, cfg.peak_lr, cfg.warmup_steps, total_steps, cfg.final_lr_fraction,
                      cfg.schedule)
    for k in train:
      gk = g[k] * scale
      m[k] = cfg.b1 * m[k] + (1 - cfg.b1) * gk
      v2[k] = cfg.b2 * v2[k] + (1 - cfg.b2) * gk * gk
      m_hat = m[k] / (1 - cfg.b1 ** (t + 1))
      v_hat = v2[k] / (1 - cfg.b2 ** (t + 1))
      update = m_hat / (np.sqrt(v_hat) + cfg.eps)
      if k in decay:
        update = update + cfg.weight_decay * flat[k]
      flat[k] = flat[k] - lr * update
  return flat


@pytest.mark.parametrize("trainable", [".*", r"attention|lm_head"])
def test_adamw_matches_numpy_reference(trainable):
  cfg = optim_cfg(peak_lr=1e-2, warmup_steps=2, clip_norm=0.5, weight_decay=0.3,
                  trainable=trainable)
  total = 8
  params = jax.tree.map(jnp.asarray, small_params(0))
  # Frozen parameters get huge gradients: they must affect neither updates nor clipping.
  grads_seq = [jax.tree_util.tree_map_with_path(
      lambda p, g: g * (1.0 if "attention" in optim.param_path(p) or "lm_head" in
                        optim.param_path(p) or trainable == ".*" else 1e4),
      small_params(s + 1)) for s in range(5)]
  tx = optim.make_optimizer(cfg, total, params)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for grads in grads_seq:
    updates, state = update(jax.tree.map(jnp.asarray, grads), state, params)
    params = optax.apply_updates(params, updates)
  want = reference_adamw(small_params(0), grads_seq, cfg, total, trainable, cfg.decay_exclude)
  for path, got in jax.tree_util.tree_flatten_with_path(params)[0]:
    np.testing.assert_allclose(np.asarray(got), want[optim.param_path(path)], rtol=2e-5,
                               atol=1e-6, err_msg=optim.param_path(path))


def test_weight_decay_only_where_masked():
  # Zero gradients: the Adam direction is 0, so the update is exactly -lr * wd * p where
  # decayed and 0 where excluded.
  cfg = optim_cfg(peak_lr=0.5, warmup_steps=0, schedule="constant", clip_norm=0.0,
                  weight_decay=0.2)
  params = jax.tree.map(jnp.asarray, small_params(0))
  tx = optim.make_optimizer(cfg, 10, params)
  updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
  original = {optim.param_path(q): x
              for q, x in jax.tree_util.tree_flatten_with_path(small_params(0))[0]}
  for path, u in jax.tree_util.tree_flatten_with_path(updates)[0]:
    name = optim.param_path(path)
    p = original[name]
    if "norm" in name or "embed" in name:
      np.testing.assert_array_equal(np.asarray(u), 0.0, err_msg=name)
    else:
      np.testing.assert_allclose(np.asarray(u), -0.5 * 0.2 * p, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("as_nnx_state", [False, True])
def test_frozen_parameters_do_not_change_and_have_no_moments(as_nnx_state):
  # The model's real parameter tree (shapes, paths, nnx.Param wrappers), filled cheaply.
  params = jax.tree.map(lambda a: jnp.full(a.shape, 0.1, a.dtype),
                        nnx.state(spec_lib.abstract(preset("tiny")), nnx.Param))
  if not as_nnx_state:
    params = nnx.to_pure_dict(params)
  trainable = r"attention/(q|k)$"
  tx = optim.make_optimizer(optim_cfg(warmup_steps=0, schedule="constant",
                                      trainable=trainable), 10, params)
  state = tx.init(params)
  mask = optim.trainable_mask(params, trainable)
  n_trainable = spec_lib.count_params(params, mask)
  # Adam keeps two moments per trainable element; the rest of the state is scalar counters.
  state_elems = [x.size for x in jax.tree.leaves(state)]
  assert sum(s for s in state_elems if s > 1) == 2 * n_trainable
  before = jax.tree.map(np.asarray, params)
  rng = np.random.default_rng(1)
  update = jax.jit(tx.update)
  for _ in range(3):
    grads = jax.tree.map(lambda x: jnp.asarray(rng.standard_normal(x.shape), x.dtype), params)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  for (path, b), a, m in zip(jax.tree_util.tree_flatten_with_path(before)[0],
                             jax.tree.leaves(params), jax.tree.leaves(mask)):
    name = optim.param_path(path)
    if m:
      assert not np.array_equal(np.asarray(a), b), name
    else:
      np.testing.assert_array_equal(np.asarray(a), b, err_msg=name)
