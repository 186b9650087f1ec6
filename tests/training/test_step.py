"""The train step: HF-torch loss/gradient parity, mesh invariance, real sharding, grad accumulation.

8 simulated CPU devices (tests/conftest.py), tiny models, float32.
"""
import jax
import ml_collections
import numpy as np
import pytest

from llama_jax.interop import hf_layout as weights
from llama_jax.model.config import ModelConfig, preset
from llama_jax.model.spec import ModelSpec
from llama_jax.parallel import mesh as mesh_lib
from llama_jax.parallel import sharding
from llama_jax.parallel.logical_axes import DEFAULT_RULES
from llama_jax.training import state as state_lib
from llama_jax.training import step as train_step

# 8 query heads / 4 kv heads so tensor=4 divides both.
CFG = preset("tiny", vocab_size=256, d_model=64, n_layers=2, n_heads=8, n_kv_heads=4,
             head_dim=8, ffn_dim=128)
B, T = 8, 32


def optim_cfg(**kw):
  c = dict(peak_lr=1e-2, warmup_steps=0, schedule="constant", final_lr_fraction=0.1, b1=0.9,
           b2=0.95, eps=1e-8, weight_decay=0.1, decay_exclude=("norm", "embed"), clip_norm=1.0,
           trainable=".*")
  c.update(kw)
  return ml_collections.ConfigDict(c)


def make_batches(n, b=B, t=T, seed=0, vocab=256):
  """Packed-looking batches: two documents per row, a partial loss mask.

  Rows count up from a random start (mod vocab), so there is something to learn.
  """
  rng = np.random.RandomState(seed)
  out = []
  for _ in range(n):
    tok = ((rng.randint(0, vocab, (b, 1)) + np.arange(t + 1)[None]) % vocab).astype(np.int32)
    cut = rng.randint(4, t - 4, (b,))
    seg = np.where(np.arange(t)[None] < cut[:, None], 1, 2).astype(np.int32)
    pos = np.where(seg == 1, np.arange(t)[None], np.arange(t)[None] - cut[:, None]).astype(
        np.int32)
    mask = (rng.rand(b, t) > 0.2).astype(np.float32)
    out.append(dict(tokens=tok[:, :-1], targets=tok[:, 1:], segment_ids=seg, positions=pos,
                    loss_mask=mask))
  return out


def relative_error(a, b) -> float:
  return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def mesh_cfg(**axes):
  return dict(dict(data=1, fsdp=1, tensor=1, sequence=1), **axes)


def train(mesh_axes, batches, accum=1, steps=3, cfg=CFG, ocfg=None, params=None):
  n = int(np.prod(list(mesh_axes.values())))
  devices = jax.devices()[:n]
  mesh_lib.validate_mesh(mesh_cfg(**mesh_axes), n, cfg, B, T, grad_accum=accum)
  mesh = mesh_lib.make_mesh(mesh_cfg(**mesh_axes), devices)
  ocfg = ocfg or optim_cfg()
  spec = ModelSpec.build(cfg, DEFAULT_RULES, trainable=ocfg.trainable)
  tx, sched = state_lib.make_optimizer(spec, ocfg, 10)
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(spec, tx, seed=0)
    shard = state_lib.state_shardings(abstract, spec, mesh)
    if params is not None:
      params = jax.device_put(params, shard.params)
    state = state_lib.create_state(spec, tx, 0, shard, params)
    init = jax.tree.map(np.asarray, state.params)
    step = train_step.make_train_step(spec, tx, sched, grad_accum=accum, shardings=shard)
    history = []
    for batch in batches[:steps]:
      state, m = step(state, sharding.global_batch(batch, mesh, DEFAULT_RULES))
      history.append({k: float(v) for k, v in m.items()})
  return state, history, init, mesh


# ------------------------------------------------------------------------------ vs HF torch
def test_loss_and_gradient_norm_match_hf_torch():
  import torch

  from tests.references import hf_reference
  hf_cfg = hf_reference.hf_config(vocab_size=256, hidden_size=64, intermediate_size=128,
                                  num_attention_heads=8, num_key_value_heads=4, head_dim=8,
                                  num_hidden_layers=2, max_position_embeddings=64)
  hf = hf_reference.hf_model(hf_cfg)
  cfg = ModelConfig.from_hf(hf_cfg.to_dict())
  state_dict = hf_reference.hf_state(hf)
  params = weights.hf_to_params(cfg, state_dict.__getitem__)
  # One document per row (HF has no segment ids), a ragged loss mask.
  rng = np.random.RandomState(3)
  tok = rng.randint(0, 256, (4, 17)).astype(np.int32)
  mask = (rng.rand(4, 16) > 0.3).astype(np.float32)
  batch = dict(tokens=tok[:, :-1], targets=tok[:, 1:], segment_ids=np.ones((4, 16), np.int32),
               positions=np.tile(np.arange(16, dtype=np.int32), (4, 1)), loss_mask=mask)
  _, history, _, _ = train({"data": 2, "fsdp": 2}, [batch], steps=1, cfg=cfg,
                           ocfg=optim_cfg(clip_norm=0.0), params=params)

  logits = hf(torch.as_tensor(tok[:, :-1]).long()).logits.double()
  nll = torch.nn.functional.cross_entropy(logits.reshape(-1, 256),
                                          torch.as_tensor(tok[:, 1:]).long().reshape(-1),
                                          reduction="none")
  m = torch.as_tensor(mask, dtype=torch.float64).reshape(-1)
  loss = (nll * m).sum() / m.sum()
  loss.backward()
  grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in hf.parameters()))
  assert history[0]["loss"] == pytest.approx(loss.item(), rel=1e-5)
  assert history[0]["grad_norm"] == pytest.approx(grad_norm.item(), rel=1e-4)
  assert history[0]["tokens"] == mask.sum()
  assert history[0]["learning_rate"] == pytest.approx(1e-2)


# ------------------------------------------------------------------------------ meshes
MESHES = [{"data": 1}, {"data": 8}, {"data": 2, "fsdp": 4}, {"fsdp": 2, "tensor": 4}]


def test_meshes_give_the_same_losses_and_shard_the_parameters():
  batches = make_batches(3)
  runs = {}
  # eps=1 makes Adam's update proportional to the gradient (see the accumulation test below):
  # with a tiny eps, float noise in near-zero gradients becomes whole ~lr-sized updates and
  # the parameters could only be compared loosely.
  ocfg = optim_cfg(eps=1.0, peak_lr=1.0)
  for axes in MESHES:
    state, history, init, mesh = train(axes, batches, ocfg=ocfg)
    runs[str(axes)] = (history, init, jax.tree.map(np.asarray, state.params))
    total = sum(x.nbytes for x in jax.tree.leaves(state.params))
    per_device = sharding.bytes_per_device(state.params)
    assert len(per_device) == mesh.size
    fsdp, tensor = mesh.shape["fsdp"], mesh.shape["tensor"]
    # Norm scales [L, D] / [D] are the only replicated parameters (a few hundred bytes).
    replicated = (2 * CFG.n_layers + 1) * CFG.d_model * 4
    assert max(per_device.values()) <= total / (fsdp * tensor) + replicated, axes
    assert min(per_device.values()) >= total / (fsdp * tensor) - replicated, axes
    # The Adam moments are laid out like their parameters.
    moments = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
               if jax.tree_util.keystr(path).endswith("['layers']['ffn']['up']")]
    assert len(moments) == 2  # mu and nu
    for leaf in moments:
      assert leaf.sharding.spec == state.params["layers"]["ffn"]["up"].sharding.spec

  ref_history, ref_init, ref_params = runs[str(MESHES[0])]
  assert ref_history[-1]["loss"] < ref_history[0]["loss"]
  for name, (history, init, params) in runs.items():
    # Same seed, same initial parameters, whatever the layout.
    jax.tree.map(np.testing.assert_array_equal, init, ref_init)
    for got, want in zip(history, ref_history):
      assert got["loss"] == pytest.approx(want["loss"], rel=1e-5), name
      assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4), name
    jax.tree.map(lambda a, b, name=name: relative_error(a, b) < 1e-5 or pytest.fail(name),
                 params, ref_params)


# ------------------------------------------------------------------------------ accumulation
def test_grad_accumulation_equals_the_full_batch():
  batches = make_batches(2, seed=5)
  axes = {"data": 2, "fsdp": 2}
  # Adam's first updates are ~lr * g / (|g| + eps): with a small eps, float noise in a
  # near-zero gradient flips whole updates. eps=1 makes the update proportional to the
  # gradient, so the parameters show the gradients' agreement element by element.
  ocfg = optim_cfg(eps=1.0, peak_lr=1.0)
  s1, h1, _, _ = train(axes, batches, accum=1, steps=2, ocfg=ocfg)
  s2, h2, _, _ = train(axes, batches, accum=2, steps=2, ocfg=ocfg)
  s4, h4, _, _ = train({"data": 2}, batches, accum=4, steps=2, ocfg=ocfg)
  for other in (h2, h4):
    for a, b in zip(h1, other):
      assert a["loss"] == pytest.approx(b["loss"], rel=1e-6, abs=1e-6)
      assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
      assert a["tokens"] == b["tokens"]
  for other in (s2, s4):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), np.asarray(b),
                                                         rtol=1e-5, atol=1e-7),
                 other.params, s1.params)
  assert int(s2.step) == 2


def test_frozen_parameters_do_not_move_and_eval_step_sums():
  batches = make_batches(1, seed=7)
  ocfg = optim_cfg(trainable="layers/ffn")
  state, history, init, mesh = train({"data": 8}, batches, steps=1, ocfg=ocfg)
  params = jax.tree.map(np.asarray, state.params)
  np.testing.assert_array_equal(params["embed"], init["embed"])
  np.testing.assert_array_equal(params["layers"]["attention"]["q"],
                                init["layers"]["attention"]["q"])
  assert not np.array_equal(params["layers"]["ffn"]["up"], init["layers"]["ffn"]["up"])

  with jax.set_mesh(mesh):
    eval_step = train_step.make_eval_step(ModelSpec.build(CFG, DEFAULT_RULES))
    nll, count = eval_step(jax.device_put(init, jax.tree.map(lambda x: x.sharding,
                                                             state.params)),
                           sharding.global_batch(batches[0], mesh, DEFAULT_RULES))
  assert float(count) == batches[0]["loss_mask"].sum()
  assert float(nll) / float(count) == pytest.approx(history[0]["loss"], rel=1e-5)


def test_frozen_parameters_get_no_weight_gradients():
  """Frozen weights enter through stop_gradient: grad_norm covers only the trainable ones (checked
  against the masked full gradient) and the compiled step does fewer FLOPs."""
  from llama_jax.model import loss as loss_lib
  from llama_jax.model import spec as spec_lib
  from llama_jax.perf import jax_step as bench_jax
  batch = make_batches(1, seed=11)[0]
  regex = "layers/ffn"
  spec = ModelSpec.build(CFG, trainable=regex)
  tx, sched = state_lib.make_optimizer(spec, optim_cfg(trainable=regex), 10)
  state = jax.jit(lambda: state_lib.init_state(spec, tx, 0))()
  params0 = jax.tree.map(np.asarray, state.params)
  step = train_step.make_train_step(spec, tx, sched)
  _, metrics = step(state, {k: jax.numpy.asarray(v) for k, v in batch.items()})

  # Reference: the full gradient (no stop_gradient anywhere), frozen leaves dropped afterwards.
  (nll, count), grads = jax.value_and_grad(
      lambda p: loss_lib.batch_loss_sums(spec.merge(p), batch, train_step.LOSS_CHUNK),
      has_aux=True)(params0)
  sq = [np.sum((np.asarray(g, np.float64) / float(count)) ** 2) for g in jax.tree.leaves(grads)]
  trainable = jax.tree.leaves(spec_lib.trainable_mask(params0, regex))
  want = np.sqrt(sum(s for s, t in zip(sq, trainable) if t))
  assert float(metrics["grad_norm"]) == pytest.approx(want, rel=1e-5)
  assert want < 0.99 * np.sqrt(sum(sq))  # the frozen gradients are really left out

  def step_flops(trainable):
    spec_ = ModelSpec.build(CFG, trainable=trainable)
    tx_, sched_ = state_lib.make_optimizer(spec_, optim_cfg(trainable=trainable), 10)
    fn = train_step.make_train_step(spec_, tx_, sched_)
    compiled = fn.lower(state_lib.abstract_state(spec_, tx_),
                        bench_jax.abstract_batch(B, T)).compile()
    return bench_jax.flops_from_cost_analysis(compiled)
  assert step_flops(regex) < 0.9 * step_flops(".*")


def test_abstract_state_allocates_nothing_for_a_65b_model():
  cfg = preset("llama_65b")
  spec = ModelSpec.build(cfg, DEFAULT_RULES)
  tx, _ = state_lib.make_optimizer(spec, optim_cfg(), 100)
  abstract = state_lib.abstract_state(spec, tx)
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract.params))
  assert n == cfg.num_params()
  assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(abstract))
  mesh = mesh_lib.make_mesh(mesh_cfg(fsdp=8))
  shard = state_lib.state_shardings(abstract, spec, mesh)
  q = shard.params["layers"]["attention"]["q"]
  assert q.spec[1] == "fsdp"  # [layers, embed, heads, head_dim]: embed over fsdp

