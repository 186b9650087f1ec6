"""Checkpoint round trips (bitwise, across meshes), keep-K, corrupt/incomplete steps, preemption."""
import glob
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from llama_jax.checkpoints import manager as checkpoint
from llama_jax.model import spec as spec_lib
from llama_jax.model.config import preset
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import DEFAULT_RULES
from llama_jax.training import optim, preemption

CFG = preset("tiny")
OPTIM = ml_collections.ConfigDict(dict(
    peak_lr=1e-3, warmup_steps=0, schedule="constant", final_lr_fraction=0.1, b1=0.9, b2=0.95,
    eps=1e-8, weight_decay=0.1, decay_exclude=("norm", "embed"), clip_norm=1.0,
    trainable=r"attention|ffn"))  # some parameters frozen: the optimizer state has holes


def mesh_of(**axes):
  return mesh_lib.make_mesh(dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **axes))


def abstract_state():
  """A train state like the trainer's: nnx.Param tree, partly-frozen AdamW state, step, key."""
  def init():
    params = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype),
                          nnx.state(spec_lib.abstract(CFG), nnx.Param))
    tx = optim.make_optimizer(OPTIM, 100, params)
    return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32),
            "rng": jax.random.key(0)}
  return jax.eval_shape(init)


def make_state(mesh, seed=0):
  """Random values for every leaf, placed with the logical-axis shardings of `mesh`."""
  abstract = abstract_state()
  shardings = sharding.tree_shardings(abstract, mesh, DEFAULT_RULES)
  rng = np.random.default_rng(seed)

  def fill(a, s):
    if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.device_put(jax.random.key(seed), s)
    if jnp.issubdtype(a.dtype, jnp.integer):
      return jax.device_put(np.asarray(rng.integers(0, 1000, a.shape), a.dtype), s)
    return jax.device_put(rng.standard_normal(a.shape).astype(a.dtype), s)

  return jax.tree.map(fill, abstract, shardings), sharding.with_shardings(abstract, shardings)


def assert_bitwise_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(b)):
    if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
      x, y = jax.random.key_data(x), jax.random.key_data(y)
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, jax.tree_util.keystr(path)
    assert x.tobytes() == y.tobytes(), jax.tree_util.keystr(path)


def save_steps(directory, steps, mesh, keep=3):
  mgr = checkpoint.CheckpointManager(directory, keep=keep)
  states = {}
  for step in steps:
    states[step], _ = make_state(mesh, seed=step)
    assert mgr.save(step, states[step], {"step": step, "epoch": 0})
  mgr.wait()
  mgr.close()
  return states


# ------------------------------------------------------------------------------ round trips
def test_round_trip_bitwise_with_data_state(tmp_path):
  mesh = mesh_of(data=2, fsdp=4)
  state, target = make_state(mesh, seed=1)
  data_state = {"iterator": {"position": 12345, "shard": [0, 3], "seed": 7},
                "files": ["a.txt", "b.txt"], "note": "é ✓", "fraction": 0.25, "done": False}
  with checkpoint.CheckpointManager(tmp_path, keep=2) as mgr:
    assert mgr.latest_step() is None
    assert mgr.restore(target) is None
    assert mgr.save(7, state, data_state)
    mgr.wait()
    assert mgr.latest_step() == 7
  restored_state, restored_data, step = checkpoint.CheckpointManager(tmp_path).restore(target)
  assert step == 7
  assert restored_data == data_state
  assert_bitwise_equal(state, restored_state)
  for got, want in zip(jax.tree.leaves(restored_state), jax.tree.leaves(target)):
    assert got.sharding == want.sharding


def test_restore_onto_a_different_mesh(tmp_path):
  state, _ = make_state(mesh_of(data=2, fsdp=4), seed=3)
  with checkpoint.CheckpointManager(tmp_path) as mgr:
    mgr.save(3, state, {"pos": 1})
  _, target = make_state(mesh_of(fsdp=2, tensor=4))
  restored, data_state, step = checkpoint.CheckpointManager(tmp_path).restore(target)
  assert (step, data_state) == (3, {"pos": 1})
  assert_bitwise_equal(state, restored)
  q = restored["params"]["layers"]["attention"]["q"][...]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor", None)
  assert q.addressable_shards[0].data.shape == (CFG.n_layers, CFG.d_model // 2,
                                                CFG.n_heads // 4, CFG.head_dim)
  # ...and onto a single device.
  _, single = make_state(mesh_lib.make_mesh(dict(data=1), devices=jax.devices()[:1]))
  restored1, _, _ = checkpoint.CheckpointManager(tmp_path).restore(single)
  assert_bitwise_equal(state, restored1)


def test_keep_last_k(tmp_path):
  mesh = mesh_of(data=8)
  states = save_steps(tmp_path, [1, 2, 3], mesh, keep=2)
  mgr = checkpoint.CheckpointManager(tmp_path, keep=2)
  assert mgr.all_steps() == [2, 3]
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "3"]
  _, target = make_state(mesh)
  restored, data_state, step = mgr.restore(target, step=2)
  assert step == 2 and data_state == {"step": 2, "epoch": 0}
  assert_bitwise_equal(states[2], restored)
  with pytest.raises(ValueError, match=r"checkpoint step 1 is not in .*available steps: "
                     r"\[2, 3\]"):
    mgr.restore(target, step=1)


def test_save_skips_existing_and_older_steps(tmp_path, caplog):
  mesh = mesh_of(data=8)
  save_steps(tmp_path, [5], mesh)
  state, _ = make_state(mesh, seed=9)
  mgr = checkpoint.CheckpointManager(tmp_path)
  with caplog.at_level(logging.INFO, logger="llama_jax.checkpoints.manager"):
    assert not mgr.save(5, state, {})  # never overwrites
    assert not mgr.save(4, state, {})  # older than the latest: skipped without force
  assert "already exists" in caplog.text and "newer step 5" in caplog.text
  assert mgr.save(4, state, {}, force=True)
  mgr.wait()
  assert mgr.all_steps() == [4, 5]


def test_bad_data_state_is_rejected_before_writing(tmp_path):
  state, _ = make_state(mesh_of(data=8))
  mgr = checkpoint.CheckpointManager(tmp_path)
  with pytest.raises(TypeError, match="data_state must be JSON-serialisable"):
    mgr.save(1, state, {"position": np.int64(3)})
  with pytest.raises(TypeError, match="data_state must be a dict"):
    mgr.save(1, state, b"\x00")
  mgr.close()
  assert not glob.glob(str(tmp_path / "checkpoints" / "1*"))


# ------------------------------------------------------------------------------ failures
def corrupt(step_dir, how):
  if how == "array_bytes":
    files = glob.glob(str(step_dir / "state" / "**" / "d" / "*"), recursive=True)
    assert files
    for f in files:
      with open(f, "r+b") as fh:
        fh.write(b"\xff" * 16)
  elif how == "missing_metadata":
    os.remove(step_dir / "state" / "_METADATA")
  elif how == "truncated_data_state":
    (step_dir / "data" / "metadata").write_text('{"step": ')


@pytest.mark.parametrize("how", ["array_bytes", "missing_metadata", "truncated_data_state"])
def test_corrupt_latest_falls_back_to_previous(tmp_path, caplog, how):
  mesh = mesh_of(data=8)
  states = save_steps(tmp_path, [20, 30], mesh)
  step_dir = tmp_path / "checkpoints" / "30"
  corrupt(step_dir, how)
  files_before = sorted(glob.glob(str(step_dir / "**"), recursive=True))
  mgr = checkpoint.CheckpointManager(tmp_path)
  _, target = make_state(mesh)
  with caplog.at_level(logging.WARNING, logger="llama_jax.checkpoints.manager"):
    restored, data_state, step = mgr.restore(target)
  assert step == 20 and data_state == {"step": 20, "epoch": 0}
  assert_bitwise_equal(states[20], restored)
  assert "checkpoint step 30" in caplog.text and "could not be restored" in caplog.text
  # Nothing of the user's data was removed by the restore.
  assert sorted(glob.glob(str(step_dir / "**"), recursive=True)) == files_before
  # Training continues from 20: the next save moves the unreadable step aside (kept), so the
  # new step 30 is written and becomes the latest.
  new_state, _ = make_state(mesh, seed=99)
  assert mgr.save(30, new_state, {"step": 30, "epoch": 1})
  mgr.wait()
  assert mgr.all_steps() == [20, 30]
  assert os.path.isdir(tmp_path / "checkpoints" / "30.corrupt")
  restored, data_state, step = checkpoint.CheckpointManager(tmp_path).restore(target)
  assert step == 30 and data_state["epoch"] == 1
  assert_bitwise_equal(new_state, restored)


def test_all_checkpoints_unreadable_is_an_error(tmp_path):
  mesh = mesh_of(data=8)
  save_steps(tmp_path, [1, 2], mesh)
  for step in (1, 2):
    corrupt(tmp_path / "checkpoints" / str(step), "missing_metadata")
  _, target = make_state(mesh)
  with pytest.raises(checkpoint.CheckpointError, match=r"none of the checkpoints .* could be "
                     r"restored \(step 2: .*step 1: .*nothing was deleted"):
    checkpoint.CheckpointManager(tmp_path).restore(target)
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]


def test_a_changed_config_is_reported_without_orbax_advice(tmp_path, caplog):
  mesh = mesh_of(data=8)
  save_steps(tmp_path, [1], mesh)
  _, target = make_state(mesh)
  # The config changed since the save: one parameter has another shape now.
  leaves, treedef = jax.tree_util.tree_flatten(target)
  i = next(i for i, x in enumerate(leaves) if x.ndim == 2)
  wrong = leaves[i]
  leaves[i] = jax.ShapeDtypeStruct((wrong.shape[0] * 2, wrong.shape[1]), wrong.dtype,
                                   sharding=wrong.sharding)
  with pytest.raises(checkpoint.CheckpointError) as info:
    checkpoint.CheckpointManager(tmp_path).restore(jax.tree_util.tree_unflatten(treedef, leaves))
  message = str(info.value)
  assert re.search(r"step 1: an array of shape \(\d+, \d+\) in the checkpoint where the current "
                   r"config expects \(\d+, \d+\)", message), message
  assert "strict" not in message + caplog.text and "\n" not in message


def test_incomplete_save_directory_is_not_a_checkpoint(tmp_path):
  mesh = mesh_of(data=8)
  states = save_steps(tmp_path, [1], mesh)
  # What a save killed before orbax's final rename leaves behind.
  partial = tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1700000000"
  (partial / "state").mkdir(parents=True)
  (partial / "state" / "_METADATA").write_text("{")
  mgr = checkpoint.CheckpointManager(tmp_path)
  assert mgr.latest_step() == 1
  _, target = make_state(mesh)
  restored, _, step = mgr.restore(target)
  assert step == 1
  assert_bitwise_equal(states[1], restored)


KILLED_SAVE = textwrap.dedent("""
    import os, signal, sys
    import jax, jax.numpy as jnp
    from llama_jax.checkpoints import manager as checkpoint
    mgr = checkpoint.CheckpointManager(sys.argv[1], keep=3)
    mgr.save(1, {"w": jnp.full((1024, 1024), 1.0)}, {"step": 1})
    mgr.wait()
    big = {"w": jnp.full((1024, 1024), 2.0), "extra": jnp.ones((64, 1024, 1024))}  # 256 MiB
    mgr.save(2, big, {"step": 2})
    os.kill(os.getpid(), signal.SIGKILL)  # killed while the asynchronous save is running
""")


def test_save_killed_midway_leaves_previous_step(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(tmp_path)], env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
  names = os.listdir(tmp_path / "checkpoints")
  assert "1" in names and "2" not in names, names  # step 2 never finalised
  mgr = checkpoint.CheckpointManager(tmp_path)
  assert mgr.latest_step() == 1
  target = {"w": jax.ShapeDtypeStruct((1024, 1024), jnp.float32)}
  restored, data_state, step = mgr.restore(target)
  assert step == 1 and data_state == {"step": 1}
  assert float(restored["w"][0, 0]) == 1.0


# ------------------------------------------------------------------------------ preemption
def test_preemption_guard_sigterm_sets_flag_and_restores_handler():
  before = signal.getsignal(signal.SIGTERM)
  with preemption.PreemptionGuard() as guard:
    assert not guard.should_stop
    os.kill(os.getpid(), signal.SIGTERM)
    assert guard.should_stop and guard.signal_received == signal.SIGTERM
  assert signal.getsignal(signal.SIGTERM) is before


def test_second_sigint_interrupts():
  before = signal.getsignal(signal.SIGINT)
  with preemption.PreemptionGuard() as guard:
    os.kill(os.getpid(), signal.SIGINT)
    assert guard.should_stop
    with pytest.raises(KeyboardInterrupt):
      os.kill(os.getpid(), signal.SIGINT)
  assert signal.getsignal(signal.SIGINT) is before


PREEMPTED_LOOP = textwrap.dedent("""
    import sys, time
    import jax.numpy as jnp
    from llama_jax.checkpoints import manager as checkpoint
    from llama_jax.training import preemption
    mgr = checkpoint.CheckpointManager(sys.argv[1], keep=2)
    state = {"w": jnp.zeros((4,))}
    with preemption.PreemptionGuard() as guard:
      step = 0
      while not guard.should_stop:
        step += 1
        state = {"w": state["w"] + 1}
        if step == 3:
          print("running", flush=True)
        time.sleep(0.02)
      mgr.save(step, state, {"step": step})
      mgr.close()
      print("saved", step, flush=True)
""")


def test_sigterm_saves_and_exits_cleanly(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  proc = subprocess.Popen([sys.executable, "-c", PREEMPTED_LOOP, str(tmp_path)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "running"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 0, err[-2000:]
  saved_step = int(out.split()[-1])
  assert saved_step >= 3
  restored, data_state, step = checkpoint.CheckpointManager(tmp_path).restore(
      {"w": jax.ShapeDtypeStruct((4,), jnp.float32)})
  assert step == saved_step and data_state == {"step": saved_step}
  np.testing.assert_array_equal(np.asarray(restored["w"]), np.full(4, saved_step, np.float32))


def test_read_only_manager(tmp_path):
  mesh = mesh_of(data=8)
  states = save_steps(tmp_path, [1, 2], mesh)
  with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
    checkpoint.CheckpointManager(tmp_path / "elsewhere", read_only=True)
  assert not os.path.exists(tmp_path / "elsewhere")
  mgr = checkpoint.CheckpointManager(tmp_path, keep=1, read_only=True)
  _, target = make_state(mesh)
  restored, _, step = mgr.restore(target)
  assert step == 2
  assert_bitwise_equal(states[2], restored)
  with pytest.raises(PermissionError, match="read-only"):
    mgr.save(3, restored, {})
  mgr.close()
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2"]  # keep=1 deleted nothing


TWO_PROCESSES = textwrap.dedent("""
    import os, sys
    pid, port, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import jax.numpy as jnp, numpy as np
    from jax.experimental import multihost_utils
    from llama_jax.checkpoints import manager as checkpoint
    from llama_jax.parallel import mesh as mesh_lib
    from llama_jax.parallel import sharding
    from llama_jax.parallel.logical_axes import DEFAULT_RULES
    from llama_jax.training import preemption

    mesh = mesh_lib.make_mesh(dict(data=2, fsdp=4))
    full = np.arange(16 * 6, dtype=np.int32).reshape(16, 6)
    # Each process passes only its own rows; the global array must be the whole batch.
    batch = sharding.global_batch({"tokens": full[8 * pid:8 * (pid + 1)]}, mesh, DEFAULT_RULES)
    assert batch["tokens"].shape == (16, 6)
    for shard in batch["tokens"].addressable_shards:
      assert np.array_equal(np.asarray(shard.data), full[shard.index])

    def state(step):
      return {"x": batch["tokens"] * step}
    target = {"x": jax.ShapeDtypeStruct((16, 6), jnp.int32, sharding=batch["tokens"].sharding)}
    mgr = checkpoint.CheckpointManager(workdir, keep=3)
    for step in (1, 2):
      mgr.save(step, state(step), {"step": step})
    mgr.close()
    if pid == 0:  # garbage over the array bytes of step 2
      import glob
      for f in glob.glob(os.path.join(mgr.directory, "2", "state", "**", "d", "*"),
                         recursive=True):
        with open(f, "r+b") as fh:
          fh.write(bytes([255]) * 16)
    multihost_utils.sync_global_devices("corrupted")
    mgr = checkpoint.CheckpointManager(workdir, keep=3)  # as a restarted job does
    restored, data_state, step = mgr.restore(target)
    assert (step, data_state) == (1, {"step": 1}), (step, data_state)
    for shard in restored["x"].addressable_shards:
      assert np.array_equal(np.asarray(shard.data), full[shard.index])
    mgr.save(2, state(20), {"step": 20})  # moves the unreadable step 2 aside first
    mgr.close()
    restored, data_state, step = checkpoint.CheckpointManager(workdir).restore(target)
    assert (step, data_state) == (2, {"step": 20}), (step, data_state)

    with preemption.PreemptionGuard() as guard:
      assert not guard.should_stop
      if pid == 1:
        guard.request_stop()  # a signal seen by one process only...
      assert guard.should_stop  # ...stops both at the same step

    # The training loop's per-step check: the flags ride in the batch, the step reduces them,
    # and the previous step's agreed value decides — no blocking collective of its own.
    @jax.jit
    def step_fn(x, batch):  # device work with a cross-process reduction, as a train step
      return x + x.sum() % 3, jnp.max(batch[preemption.STOP_KEY])
    with jax.set_mesh(mesh), preemption.PreemptionGuard() as guard:
      x, step = batch["tokens"], 0
      while True:
        if pid == 1 and step == 4:
          guard.request_stop()  # SIGTERM reaches process 1 while it prepares step 5
        local = {preemption.STOP_KEY: guard.batch_flags(8)}
        x, stop = step_fn(x, sharding.global_batch(local, mesh, DEFAULT_RULES))
        step += 1
        if guard.stop_now(stop):
          break
        assert step < 50
    print("stopped at", step, flush=True)
    print("ok", pid, flush=True)
""")


def test_two_processes_batch_checkpoint_and_stop(tmp_path):
  import portpicker
  port = portpicker.pick_unused_port()
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  procs = [subprocess.Popen([sys.executable, "-c", TWO_PROCESSES, str(i), str(port),
                             str(tmp_path)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      outs.append(p.communicate(timeout=240))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for i, (p, (out, err)) in enumerate(zip(procs, outs)):
    assert p.returncode == 0 and f"ok {i}" in out, err[-3000:]
    assert "stopped at 6" in out  # both processes, the step after the request
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2", "2.corrupt"]


def test_async_save_survives_donated_buffers(tmp_path):
  # The trainer donates the state to the next step right after `save` returns: the save must
  # already hold its own copy of the arrays.
  mesh = mesh_of(data=2, fsdp=4)
  state, target = make_state(mesh, seed=5)
  expected = jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x), state)
  mgr = checkpoint.CheckpointManager(tmp_path, async_save=True)
  assert mgr.save(5, state, {"step": 5})
  for leaf in jax.tree.leaves(state):
    leaf.delete()  # what donation does to the saved buffers, at the earliest moment
  mgr.wait()
  restored, _, _ = mgr.restore(target)
  mgr.close()
  got = jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if jnp.issubdtype(
      x.dtype, jax.dtypes.prng_key) else x), restored)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(got)):
    assert a.tobytes() == b.tobytes()
