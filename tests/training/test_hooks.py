"""Trainer hooks and batch augmentations: extra periodic actions run when due, a random batch
transform inside the jitted step resumes bitwise, and the abstract model is built once per run."""
import jax
import numpy as np
import pytest

from llama_jax.model import spec as spec_lib
from llama_jax.training import augment, hooks
from llama_jax.training import loop as train
from llama_jax.training import validation as config_lib
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)

_MASKED = "test_random_loss_mask"


def _random_loss_mask(options, model_cfg, seq_len):
  keep = float(options["keep"])

  def transform(batch, rng, step):
    del step
    kept = jax.random.bernoulli(rng, keep, batch["loss_mask"].shape)
    return dict(batch, loss_mask=batch["loss_mask"] * kept.astype(batch["loss_mask"].dtype))

  return transform


@pytest.fixture(autouse=True, scope="module")
def _masked_augmentation():
  """A throwaway augmentation registered for this module's tests only (other modules see the
  package's own registry)."""
  augment.registry.register(augment.registry.Augmentation(
      name=_MASKED, options={"keep": 0.7}, build=_random_loss_mask,
      description="drops a random 30% of the loss mask (tests only)"))
  yield
  augment.registry.AUGMENTATIONS.unregister(_MASKED)


def _config(corpus, cache, **top):  # noqa: F811  (the fixtures, passed on)
  c = small_config(corpus, cache, **top)
  with c.unlocked():
    c.augment.name = _MASKED
  return c


def test_periodic_hooks_run_when_due_and_once_at_the_end():
  calls = []
  schedule = [hooks.Periodic("every2", 2, lambda s, _: calls.append(("every2", s))),
              hooks.Periodic("end", 0, lambda s, _: calls.append(("end", s))),
              hooks.Periodic("stop", 3, lambda s, _: calls.append(("stop", s)), on_stop=True)]
  for step in range(1, 6):
    hooks.run_due(schedule, step, None)
  hooks.run_final(schedule, 5, None, stopped=False, ran_this_step=True)
  assert calls == [("every2", 2), ("stop", 3), ("every2", 4), ("every2", 5), ("end", 5),
                   ("stop", 5)]
  calls.clear()
  hooks.run_final(schedule, 4, None, stopped=True, ran_this_step=True)  # every2 just ran at 4
  assert calls == [("stop", 4)]


def test_a_random_augmentation_resumes_bitwise(corpus, cache, tmp_path):  # noqa: F811
  full = train.run(_config(corpus, cache, checkpoint_every=2, eval_every=0, sample_tokens=0),
                   str(tmp_path / "full"))

  def crash(step, state):
    raise RuntimeError(f"simulated crash after step {step}")

  c = _config(corpus, cache, checkpoint_every=2, eval_every=0, sample_tokens=0)
  with pytest.raises(RuntimeError, match="simulated crash after step 3"):
    train.run(c, str(tmp_path / "resumed"), hooks=[hooks.Periodic("crash", 3, crash)])
  resumed = train.run(c, str(tmp_path / "resumed"))
  assert resumed.start_step == 2
  for step in (3, 4, 5, 6):
    assert resumed.losses[step] == full.losses[step], step
  for a, b in zip(jax.tree.leaves(resumed.state.params), jax.tree.leaves(full.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The augmentation really changes training (the losses differ from an unaugmented run).
  plain = small_config(corpus, cache, checkpoint_every=0, eval_every=0, sample_tokens=0)
  assert train.run(plain, str(tmp_path / "plain")).losses[2] != full.losses[2]


def test_an_unknown_augmentation_or_option_is_refused(corpus, cache):  # noqa: F811
  c = small_config(corpus, cache)
  with c.unlocked():
    c.augment.name = "mixup"
  with pytest.raises(config_lib.ConfigError, match=r"augment.name='mixup' is not a known batch "
                                                   r"augmentation; allowed: \["):
    config_lib.validate(c)


def test_the_abstract_model_is_built_once_per_run(corpus, cache, tmp_path, monkeypatch):  # noqa: F811
  spec_lib._build.cache_clear()
  built = []
  real = spec_lib.abstract
  monkeypatch.setattr(spec_lib, "abstract", lambda *a, **k: built.append(1) or real(*a, **k))
  train.run(small_config(corpus, cache, steps=2, eval_every=1, checkpoint_every=1),
            str(tmp_path / "run"))
  assert len(built) == 1  # validation, state creation, step, evaluation and sample share it
