"""Adapter-only training: the base stays bitwise frozen and holds no optimizer state, the step
matches across meshes and micro-batching, and a run's checkpoints hold only the adapter while
resuming exactly (the trainer end to end on 8 simulated CPU devices)."""
import math
from pathlib import Path

import jax
import numpy as np
import pytest

from llama_jax import adapters
from llama_jax.checkpoints import manager as checkpoint
from llama_jax.model import spec as spec_lib
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import DEFAULT_RULES
from llama_jax.training import loop as train
from llama_jax.training import state as state_lib
from llama_jax.training import step as train_step
from llama_jax.training import validation
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)
from tests.training.test_step import CFG, make_batches, mesh_cfg, optim_cfg

LORA = dict(rank=4, alpha=8.0, dropout=0.1, targets=("q", "v", "o", "down"))


def _bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def _train(spec, batches, mesh_axes=None, accum=1):
  from llama_jax.parallel import mesh as mesh_lib
  tx, sched = state_lib.make_optimizer(spec, optim_cfg(peak_lr=1e-2), 10)
  mesh = mesh_lib.make_mesh(mesh_cfg(**(mesh_axes or {"data": 1})),
                            jax.devices()[:math.prod((mesh_axes or {"data": 1}).values())])
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(spec, tx, seed=0)
    shard = state_lib.state_shardings(abstract, spec, mesh)
    state = state_lib.create_state(spec, tx, 0, shard)
    init = jax.tree.map(np.asarray, state.params)
    step = train_step.make_train_step(spec, tx, sched, shardings=shard, grad_accum=accum)
    losses = []
    for batch in batches:
      state, metrics = step(state, sharding.global_batch(batch, mesh, DEFAULT_RULES))
      losses.append(float(metrics["loss"]))
  return state, init, losses


@pytest.mark.parametrize("name,options", [("lora", LORA), ("lora", dict(LORA, dora=True)),
                                          ("series", dict(bottleneck_size=8)),
                                          ("prefix", dict(num_virtual_tokens=3))])
def test_base_is_frozen_and_has_no_optimizer_state(name, options):
  adapter = adapters.build(name, options, CFG)
  spec = spec_lib.ModelSpec.build(CFG, DEFAULT_RULES, adapter=adapter)
  state, init, losses = _train(spec, make_batches(1) * 3)  # one batch: the loss must fall
  params = jax.tree.map(np.asarray, state.params)
  base, own = spec.base_params(params), spec.saved_params(params)
  jax.tree.map(np.testing.assert_array_equal, base, spec.base_params(init))  # bit for bit
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(own), jax.tree.leaves(spec.saved_params(init))))
  assert losses[-1] < losses[0]
  # AdamW keeps two float32 moments per adapter element; the rest is a few scalar counters.
  n_adapter = spec_lib.count_params(own)
  opt_bytes = _bytes(state.opt_state)
  assert 2 * 4 * n_adapter <= opt_bytes <= 2 * 4 * n_adapter + 64, (opt_bytes, n_adapter)
  assert n_adapter < 0.2 * spec_lib.count_params(base)
  # The moments live exactly at the adapter's paths.
  moment_paths = {spec_lib.param_path(p) for p, x in
                  jax.tree_util.tree_flatten_with_path(state.opt_state)[0] if x.size > 1}
  assert moment_paths == set(spec_lib.paths(own))


def test_full_training_optimizer_bytes_for_comparison():
  spec = spec_lib.ModelSpec.build(CFG, DEFAULT_RULES)
  tx, _ = state_lib.make_optimizer(spec, optim_cfg(), 10)
  abstract = state_lib.abstract_state(spec, tx)
  n = spec.num_params()
  assert 2 * 4 * n <= _bytes(abstract.opt_state) <= 2 * 4 * n + 64


def test_meshes_and_micro_batches_agree():
  batches = make_batches(2, seed=3)
  adapter = adapters.build("lora", dict(LORA, dropout=0.0), CFG)
  spec = spec_lib.ModelSpec.build(CFG, DEFAULT_RULES, adapter=adapter)
  ref_state, _, ref_losses = _train(spec, batches)
  for axes, accum in [({"data": 2, "fsdp": 2, "tensor": 2}, 1), ({"fsdp": 4}, 2)]:
    state, _, losses = _train(spec, batches, axes, accum)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 spec.saved_params(jax.tree.map(np.asarray, state.params)),
                 spec.saved_params(jax.tree.map(np.asarray, ref_state.params)))
    a = state.params["layers"]["attention"]["q_proj"]["lora_a"]  # [layers, embed, adapter]
    assert a.sharding.spec[1] == "fsdp"
    b = state.params["layers"]["attention"]["q_proj"]["lora_b"]  # [layers, adapter, heads, hd]
    assert b.sharding.spec[2] == "tensor"  # the heads axis, as the base weight q


def test_dropout_draws_per_step_and_micro_batch():
  """With dropout the loss differs from the deterministic one, and repeating a step (same
  state, same batch) repeats it exactly."""
  batch = make_batches(1, seed=4)[0]
  adapter = adapters.build("lora", dict(LORA, dropout=0.5), CFG)
  spec = spec_lib.ModelSpec.build(CFG, adapter=adapter)
  tx, sched = state_lib.make_optimizer(spec, optim_cfg(), 10)
  state = jax.jit(lambda: state_lib.init_state(spec, tx, 0))()
  # A non-zero B so dropout of the branch input changes the output.
  state = state.replace(params=jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 if "lora_b" in str(p) else x, state.params))
  step = train_step.make_train_step(spec, tx, sched)
  batch = {k: jax.numpy.asarray(v) for k, v in batch.items()}
  _, m1 = step(jax.tree.map(lambda x: x.copy(), state), batch)
  _, m2 = step(jax.tree.map(lambda x: x.copy(), state), batch)
  assert float(m1["loss"]) == float(m2["loss"])
  eval_step = train_step.make_eval_step(spec)
  nll, n = eval_step(state.params, batch)
  assert abs(float(nll / n) - float(m1["loss"])) > 1e-4


# ------------------------------------------------------------------------------ the trainer
def _adapter_config(corpus, cache, steps, **lora):  # noqa: F811
  c = small_config(corpus, cache)
  with c.unlocked():
    c.steps = steps
    c.checkpoint_every, c.eval_every, c.sample_tokens = 2, 0, 0
    c.adapter.name = "lora"
    c.adapter.lora.update(dict(LORA, **lora))
  return c


def test_run_checkpoints_only_the_adapter_and_resumes_bit_for_bit(corpus, cache, tmp_path):  # noqa: F811
  straight = train.run(_adapter_config(corpus, cache, 4), str(tmp_path / "straight"))
  train.run(_adapter_config(corpus, cache, 2), str(tmp_path / "resumed"))
  resumed = train.run(_adapter_config(corpus, cache, 4), str(tmp_path / "resumed"))
  assert resumed.start_step == 2
  for step in (3, 4):
    assert resumed.losses[step] == straight.losses[step]
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, resumed.state.params),
               jax.tree.map(np.asarray, straight.state.params))

  # The checkpoint holds the adapter, its optimizer moments, the step and the key; no base.
  spec = validation.validate(_adapter_config(corpus, cache, 4), check_paths=False).spec
  with checkpoint.CheckpointManager(tmp_path / "straight", read_only=True) as mgr:
    saved = mgr._mgr.item_metadata(4)["state"]
  saved_paths = {spec_lib.param_path(p) for p, _ in jax.tree_util.tree_flatten_with_path(
      dict(saved["params"]))[0]}
  assert saved_paths == set(spec_lib.paths(spec.saved_params(spec.abstract_params)))
  files = sum(f.stat().st_size for f in (tmp_path / "straight" / "checkpoints" / "4").rglob("*")
              if f.is_file())
  base_bytes = 4 * spec_lib.count_params(spec.base_params(spec.abstract_params))
  assert files < base_bytes  # the base (~0.5 MB here) is not in it


def test_run_on_a_converted_base(corpus, cache, tmp_path):  # noqa: F811
  """init_from gives the base: it is used as is (bitwise), and resuming reloads it."""
  from llama_jax.checkpoints import converted
  c = _adapter_config(corpus, cache, 2)
  model_cfg = validation.validate(c, check_paths=False).model
  base = spec_lib.ModelSpec.build(model_cfg).init_params(7)
  base = jax.tree.map(lambda x: np.asarray(x) * 1.5, base)  # not what any seed draws
  converted.save_converted(tmp_path / "base", model_cfg, base)
  with c.unlocked():
    c.init_from = str(tmp_path / "base")
  result = train.run(c, str(tmp_path / "run"))
  spec = validation.validate(c).spec
  jax.tree.map(np.testing.assert_array_equal,
               spec.base_params(jax.tree.map(np.asarray, result.state.params)), base)
  with c.unlocked():
    c.steps = 3
  again = train.run(c, str(tmp_path / "run"))
  assert again.start_step == 2
  jax.tree.map(np.testing.assert_array_equal,
               spec.base_params(jax.tree.map(np.asarray, again.state.params)), base)
  assert Path(tmp_path / "run" / "config.json").read_text().count(str(tmp_path / "base")) == 1


def test_reading_an_adapter_run_on_another_runs_base(corpus, cache, tmp_path):  # noqa: F811
  """A run whose init_from is another training run reads back whole (base + adapter) with the
  readers' default placement, one device (evaluation and generation read runs this way)."""
  from llama_jax.training import run_reader
  c = _adapter_config(corpus, cache, 2)
  with c.unlocked():
    c.adapter.name = ""
  train.run(c, str(tmp_path / "base"))
  c = _adapter_config(corpus, cache, 2)
  with c.unlocked():
    c.init_from = str(tmp_path / "base")
  result = train.run(c, str(tmp_path / "run"))
  params, step = run_reader.latest_params(tmp_path / "run")
  assert step == 2
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params),
               jax.tree.map(np.asarray, result.state.params))
