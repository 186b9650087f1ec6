"""E²-LLM and PoSE batch augmentations: positions against the papers' equations (NumPy, float64
angles), the draws' distributions (chi-square), g = 1 and t = 0 equal plain training bit for bit,
per-example values through micro-batching, and bad options as clear errors before device work."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from scipy import stats

from llama_jax import rope
from llama_jax.core.errors import ConfigError
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import DEFAULT_RULES
from llama_jax.training import augment, defaults, validation
from llama_jax.training import state as state_lib
from llama_jax.training import step as train_step
from llama_jax.training.augment import e2llm, pose
from tests.references import rope_reference as ref
from tests.training.test_step import CFG, make_batches, mesh_cfg, optim_cfg

ROOT = Path(__file__).resolve().parents[2]
B, T = 8, 32


def augment_cfg(name, **options):
  c = defaults.get_config().augment
  c.name = name
  if name:
    c[name].update(options)
  return c


def transform(name, model=CFG, seq_len=T, **options):
  return augment.transform_for(augment_cfg(name, **options), model, seq_len)


def unpacked(rows=B, t=T):
  positions = np.tile(np.arange(t, dtype=np.int32), (rows, 1))
  return {"tokens": np.zeros((rows, t), np.int32), "targets": np.zeros((rows, t), np.int32),
          "segment_ids": np.ones((rows, t), np.int32), "positions": positions,
          "loss_mask": np.ones((rows, t), np.float32)}


# ------------------------------------------------------------------------------ E²-LLM
def e2llm_paper_positions(length, n_sink, t):
  """§8 / Eq. 5: [0, ..., n_sink-1, n_sink+t, ..., R-1+t] (before the division by g)."""
  return np.concatenate([np.arange(min(n_sink, length)), np.arange(n_sink, length) + t])


def test_e2llm_positions_and_angles_follow_the_paper():
  window, g_max, n_sink = 24, 6, 4
  fn = jax.jit(transform("e2llm", g_max=g_max, window=window, n_sink=n_sink, per="example"))
  seen_g, seen_t = set(), set()
  for step in range(6):
    out = fn(unpacked(), jax.random.fold_in(jax.random.PRNGKey(3), step), step)
    g = np.asarray(out["rope"].scale)
    positions = np.asarray(out["positions"])
    for r in range(B):
      t = int(positions[r, n_sink]) - n_sink
      assert g[r] == int(g[r]) and 1 <= g[r] <= g_max
      assert 0 <= t <= max(0, int(g[r]) * window - T)
      np.testing.assert_array_equal(positions[r], e2llm_paper_positions(T, n_sink, t))
      if g[r] * window >= T:
        assert (T - 1 + t) / g[r] < window  # every scaled position inside the window
      seen_g.add(int(g[r]))
      seen_t.add(t)
    # The model's angles: ((m + t_m) / g)·θ_i, float64 from the equation.
    cos, sin = rope.cos_sin(CFG.rope, CFG.head_dim, out["positions"], inputs=out["rope"])
    for r in range(B):
      t = int(positions[r, n_sink]) - n_sink
      m = np.arange(T, dtype=np.float64)
      shifted = np.where(m >= n_sink, m + t, m)
      ang = (shifted / g[r])[:, None] * ref.theta(CFG.rope.rope_theta, CFG.head_dim)[None]
      ang = np.concatenate([ang, ang], -1)
      np.testing.assert_allclose(np.asarray(cos[r]), np.cos(ang), atol=1e-5)
      np.testing.assert_allclose(np.asarray(sin[r]), np.sin(ang), atol=1e-5)
  assert len(seen_g) > 3 and len(seen_t) > 10  # the draws vary
  metrics = out["augment_metrics"]
  assert float(metrics["e2llm_g"]) == pytest.approx(g.mean())


def test_e2llm_shifts_each_packed_document_after_its_own_sinks():
  batch = make_batches(1, b=4, t=T, seed=1)[0]
  out = transform("e2llm", g_max=4, window=32, n_sink=2, per="example")(
      batch, jax.random.PRNGKey(0), 0)
  got = np.asarray(out["positions"])
  for r in range(4):
    t = got[r] - batch["positions"][r]
    moved = batch["positions"][r] >= 2
    assert np.all(t[~moved] == 0) and len(set(t[moved])) == 1  # one t per row, sinks stay
  assert np.any(got != batch["positions"])


def test_e2llm_per_step_shares_one_draw_per_iteration():
  fn = jax.jit(transform("e2llm", g_max=5, window=16, n_sink=4, per="step"))
  gs = []
  for step in range(400):
    out = fn(unpacked(rows=4), jax.random.fold_in(jax.random.PRNGKey(1), step), step)
    g, pos = np.asarray(out["rope"].scale), np.asarray(out["positions"])
    assert np.all(g == g[0]) and np.all(pos == pos[0])
    gs.append(int(g[0]))
  counts = np.bincount(gs, minlength=6)[1:]
  assert stats.chisquare(counts).pvalue > 1e-3


def test_e2llm_draws_are_uniform_over_g_and_t_given_g():
  """Chi-square over the joint cells (g, t): P = 1/g_max · 1/(t_max(g) + 1)."""
  g_max, window, seq_len, rows = 3, 8, 4, 64
  keys = jax.random.split(jax.random.PRNGKey(7), 500)
  g, t = jax.jit(jax.vmap(lambda k: e2llm.draw(k, rows, g_max, window, seq_len, "example")))(keys)
  g, t = np.asarray(g).ravel(), np.asarray(t).ravel()
  cells, expected = [], []
  for gv in range(1, g_max + 1):
    t_max = max(0, gv * window - seq_len)
    assert t[g == gv].max() <= t_max
    for tv in range(t_max + 1):
      cells.append(np.sum((g == gv) & (t == tv)))
      expected.append(len(g) / g_max / (t_max + 1))
  assert sum(cells) == len(g) == 32000
  assert stats.chisquare(cells, expected).pvalue > 1e-3


# ------------------------------------------------------------------------------ PoSE
def pose_paper_positions(length, r1, u):
  """§3.2, two chunks: chunk 1 at 0..r1-1, chunk 2 at r1+u .. ℓ-1+u."""
  return np.concatenate([np.arange(r1), np.arange(r1, length) + u])


def test_pose_positions_follow_the_paper_for_whole_and_packed_rows():
  target = 100
  fn = jax.jit(transform("pose", model=CFG.replace(max_position_embeddings=128),
                         target_length=target))
  for step in range(5):
    out = fn(unpacked(), jax.random.fold_in(jax.random.PRNGKey(2), step), step)
    got = np.asarray(out["positions"])
    for r in range(B):
      jump = np.flatnonzero(np.diff(got[r]) != 1)
      assert len(jump) <= 1
      r1 = int(jump[0]) + 1 if len(jump) else T  # u = 0 leaves the row unchanged
      u = int(got[r, r1] - r1) if r1 < T else 0
      assert 1 <= r1 <= -(-T // 2) or u == 0
      assert 0 <= u <= target - T
      np.testing.assert_array_equal(got[r], pose_paper_positions(T, r1, u))
  # With linear scaling s (PoSE's default pairing): angles (p / s)·θ_i, float64.
  linear = rope.RopeConfig("linear", 1e4, factor=4.0)
  cos, _ = rope.cos_sin(linear, CFG.head_dim, out["positions"])
  ang = (got.astype(np.float64) / 4.0)[..., None] * ref.theta(1e4, CFG.head_dim)
  np.testing.assert_allclose(np.asarray(cos), np.cos(np.concatenate([ang, ang], -1)), atol=1e-5)
  # Packed rows: each document (positions from 0) gets its own chunks and skip.
  batch = make_batches(1, b=4, t=T, seed=3)[0]
  out = fn(batch, jax.random.PRNGKey(9), 0)
  got = np.asarray(out["positions"])
  for r in range(4):
    for seg in (1, 2):
      doc = got[r][batch["segment_ids"][r] == seg]
      ell = len(doc)
      jump = np.flatnonzero(np.diff(doc) != 1)
      r1 = int(jump[0]) + 1 if len(jump) else ell
      u = int(doc[r1] - r1) if r1 < ell else 0
      assert len(jump) <= 1 and 0 <= u <= target - ell
      np.testing.assert_array_equal(doc, pose_paper_positions(ell, r1, u))
  assert float(out["augment_metrics"]["pose_u"]) > 0


def test_pose_draws_are_uniform():
  """Chi-square over (r1, u): r1 ~ U{1..⌈ℓ/2⌉} and u ~ U{0..L_t - ℓ}, independent."""
  ell, target, rows = 8, 20, 64
  lengths = jnp.full((rows, 1), ell, jnp.int32)
  keys = jax.random.split(jax.random.PRNGKey(11), 500)
  r1, u = jax.jit(jax.vmap(lambda k: pose.draw(k, lengths, target)))(keys)
  r1, u = np.asarray(r1).ravel(), np.asarray(u).ravel()
  cells = [np.sum((r1 == a) & (u == b)) for a in range(1, ell // 2 + 1)
           for b in range(target - ell + 1)]
  assert sum(cells) == len(r1) == 32000  # nothing outside the ranges
  assert stats.chisquare(cells).pvalue > 1e-3


# ------------------------------------------------------------------------------ train step
def run_steps(batches, name="", accum=1, axes=None, steps=2, **options):
  axes = axes or {"data": 2}
  n = int(np.prod(list(axes.values())))
  mesh = mesh_lib.make_mesh(mesh_cfg(**axes), jax.devices()[:n])
  ocfg = optim_cfg()
  spec = ModelSpec.build(CFG, DEFAULT_RULES)
  tx, sched = state_lib.make_optimizer(spec, ocfg, 10)
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(spec, tx, seed=0)
    shard = state_lib.state_shardings(abstract, spec, mesh)
    state = state_lib.create_state(spec, tx, 0, shard)
    fn = train_step.make_train_step(spec, tx, sched, grad_accum=accum, shardings=shard,
                                    transform=transform(name, **options) if name else None)
    history = []
    for batch in batches[:steps]:
      state, m = fn(state, sharding.global_batch(batch, mesh, DEFAULT_RULES))
      history.append({k: float(v) for k, v in m.items()})
  return jax.tree.map(np.asarray, state.params), history


def test_e2llm_with_g_1_and_t_0_is_plain_training_bit_for_bit():
  """g_max = 1 draws g = 1; a window of R makes t_max = 0: exactly the plain step."""
  batches = make_batches(2, seed=4)
  plain, h0 = run_steps(batches, accum=2)
  aug, h1 = run_steps(batches, "e2llm", accum=2, g_max=1, window=T)
  assert [h["loss"] for h in h0] == [h["loss"] for h in h1]
  assert [h["augment_e2llm_g"] for h in h1] == [1.0, 1.0]
  assert [h["augment_e2llm_t"] for h in h1] == [0.0, 0.0]
  jax.tree.map(np.testing.assert_array_equal, aug, plain)


def test_per_example_draws_survive_micro_batching():
  """Per-row scales are split with their rows: accumulation equals the large batch."""
  batches = make_batches(2, seed=6)
  options = dict(g_max=8, window=16, n_sink=4, per="example")
  p1, h1 = run_steps(batches, "e2llm", accum=1, **options)
  p2, h2 = run_steps(batches, "e2llm", accum=2, **options)
  for a, b in zip(h1, h2):
    assert a["augment_e2llm_g"] == b["augment_e2llm_g"] and a["augment_e2llm_t"] == b[
        "augment_e2llm_t"]
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
  plain = run_steps(batches, accum=1)[1]
  assert all(a["loss"] != b["loss"] for a, b in zip(h1, plain))  # the draws took effect
  pose_hist = run_steps(batches, "pose", accum=2, steps=1,
                        target_length=CFG.max_position_embeddings)[1]
  assert pose_hist[0]["augment_pose_u"] > 0 and np.isfinite(pose_hist[0]["loss"])


# ------------------------------------------------------------------------------ bad options
def tiny_config(name, **options):
  c = defaults.get_config()
  c.steps, c.seq_len, c.batch_size = 10, 64, 8
  c.optim.warmup_steps = 2
  c.augment.name = name
  c.augment[name].update(options)
  return validation.lock(c)


@pytest.mark.parametrize("name,options,match", [
    ("e2llm", {"g_max": 0}, r"augment\.e2llm\.g_max=0; allowed: an integer >= 1"),
    ("e2llm", {"g_max": -3}, r"augment\.e2llm\.g_max=-3; allowed: an integer >= 1"),
    ("e2llm", {"window": 512}, r"augment\.e2llm\.window=512: positions scaled into the window "
     r"reach 511, past what the model can represent \(model\.max_position_embeddings=256\); "
     r"allowed: a window <= 256"),
    ("e2llm", {"g_max": 70000, "window": 256}, r"g_max=70000 with window=256 reaches position "
     r"17919999, past what float32 angles represent exactly \(2\^24\); allowed: g_max <= 65536"),
    ("e2llm", {"n_sink": 64}, r"augment\.e2llm\.n_sink=64; allowed: an integer in "
     r"\[0, seq_len=64\)"),
    ("e2llm", {"per": "batch"}, r"augment\.e2llm\.per='batch'; allowed: \['step', 'example'\]"),
    ("pose", {"target_length": 32}, r"augment\.pose\.target_length=32 is shorter than "
     r"seq_len=64"),
    ("pose", {"target_length": 1024}, r"augment\.pose\.target_length=1024: skipped positions "
     r"reach 1023, past what the model can represent \(model\.max_position_embeddings=256\)"),
])
def test_bad_options_are_clear_errors(name, options, match):
  with pytest.raises(ConfigError, match=match):
    validation.validate(tiny_config(name, **options))


def test_unknown_augmentation_and_option():
  with pytest.raises(ConfigError, match=r"augment\.name='e2lm' is not a known batch "
                     r"augmentation; allowed: \['e2llm', 'pose'\]"):
    c = tiny_config("e2llm")
    c.augment.name = "e2lm"
    validation.validate(c)
  with pytest.raises(ConfigError, match=r"unknown config key\(s\) \['augment\.e2llm\.gmax'\]"):
    validation.validate(tiny_config("e2llm", gmax=3))
  with pytest.raises(ConfigError, match=r"augment\.e2llm\.gmax does not exist; 'e2llm' "
                     r"accepts \['g_max', 'n_sink', 'per', 'window'\]"):
    augment.transform_for(augment_cfg("e2llm", gmax=3), CFG, T)


def test_cli_rejects_a_bad_augmentation_before_writing_anything(tmp_path):
  workdir = tmp_path / "run"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  out = subprocess.run(
      [sys.executable, "-m", "llama_jax.train", "--config=configs/tiny.py",
       f"--workdir={workdir}", "--config.augment.name=e2llm", "--config.augment.e2llm.g_max=0"],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2  # a config that cannot work (core.cli's usage status)
  assert "train: error: augment.e2llm.g_max=0; allowed: an integer >= 1" in out.stderr
  assert "Traceback" not in out.stderr
  assert not workdir.exists()  # nothing was written


def test_defaults_hold_every_registered_augmentation():
  c = defaults.get_config()
  assert c.augment.name == ""
  assert dict(c.augment.e2llm) == {"g_max": 20, "window": 0, "n_sink": 4, "per": "step"}
  assert dict(c.augment.pose) == {"target_length": 0}
  assert isinstance(c.augment, ml_collections.ConfigDict)
