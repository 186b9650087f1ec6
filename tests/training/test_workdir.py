"""A training run's workdir as a source of weights: export to HF, generate/evaluate from it."""
import jax.numpy as jnp
import numpy as np
import pytest

from llama_jax import convert, train
from llama_jax.training import run_reader, workdir
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def run(corpus, cache, tmp_path_factory):  # noqa: F811
  path = tmp_path_factory.mktemp("run") / "w"
  c = small_config(corpus, cache)
  c.unlock()
  c.steps, c.eval_every, c.sample_tokens = 3, 0, 4
  c.mesh.update(dict(data=8, fsdp=1))
  result = train.run(c, str(path))
  return path, result


def test_workdir_keeps_its_tokenizer_and_config(run):
  path, _ = run
  assert workdir.tokenizer_path(path) is not None
  cfg = convert.load_config(path)
  assert cfg.vocab_size == 320 and cfg.n_layers == 2


def test_export_of_a_workdir_loads_in_transformers_with_the_same_logits(run, tmp_path):
  torch = pytest.importorskip("torch")
  from transformers import LlamaForCausalLM
  path, _ = run
  model = convert.load_model(path)  # the newest checkpoint of the run
  params, step = run_reader.latest_params(path)
  assert step == 3
  convert.convert(path, tmp_path / "hf", "workdir", "hf")
  hf = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
  tokens = np.random.RandomState(0).randint(0, 320, (2, 40))
  with torch.no_grad():
    want = hf(torch.as_tensor(tokens)).logits.numpy()
  got = np.asarray(model(jnp.asarray(tokens)))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_reading_a_workdir_changes_nothing_in_it(run, tmp_path):
  path, _ = run
  before = sorted(p.relative_to(path) for p in path.rglob("*"))
  convert.convert(path, tmp_path / "conv", "workdir", "llama_jax")
  assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
  assert convert.load_config(tmp_path / "conv") == convert.load_config(path)


def test_a_directory_that_is_not_a_workdir_is_refused(tmp_path):
  with pytest.raises(convert.CheckpointError, match="not a training workdir"):
    convert.read("workdir", tmp_path)


def test_an_hf_directory_is_not_mistaken_for_a_workdir(tmp_path):
  from llama_jax.training import validation as config_lib
  (tmp_path / "config.json").write_text('{"model_type": "llama", "hidden_size": 64}')
  assert not workdir.is_workdir(tmp_path)
  with pytest.raises(config_lib.ConfigError, match="convert it first"):
    config_lib.init_from_kind(str(tmp_path))
