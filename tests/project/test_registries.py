"""Adding an attention kernel or an evaluation is one file: a module that registers its record
makes it selectable from a config, with no other edit."""
import importlib
import json
import sys
import textwrap

from llama_jax import attention, evals
from llama_jax.training import loop as train
from llama_jax.training import validation as config_lib
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)

PLUGIN = textwrap.dedent('''
    """A kernel and an evaluation registered from outside the project's packages."""
    import jax.numpy as jnp

    from llama_jax.attention import registry as kernels
    from llama_jax.attention import xla
    from llama_jax.evals import registry as evals

    TRACED = []


    def attention(q, k, v, **kwargs):
      TRACED.append(q.shape)
      return xla.attention(q, k, v, **kwargs)


    kernels.register(kernels.Kernel(name="plugin_reference", fn=attention))


    @evals.register
    class EmbeddingNorm(evals.Evaluation):
      name = "plugin_embedding_norm"
      options = {"scale": evals.Option(1.0, "multiplies the norm")}
      needs = ()

      def run(self, model):
        norm = float(jnp.linalg.norm(model.embed[...])) * self.config["scale"]
        return evals.Result({"norm": norm}, {"norm": norm})
''')


def test_a_plugin_module_adds_a_kernel_and_an_evaluation(corpus, cache, tmp_path,  # noqa: F811
                                                         monkeypatch):
  (tmp_path / "llama_plugin.py").write_text(PLUGIN)
  monkeypatch.syspath_prepend(str(tmp_path))
  plugin = importlib.import_module("llama_plugin")
  try:
    assert "plugin_reference" in attention.names()
    assert "plugin_embedding_norm" in evals.names()
    c = small_config(corpus, cache, steps=2, eval_every=0, checkpoint_every=0, sample_tokens=0)
    with c.unlocked():
      c.model.attention = "plugin_reference"
      c.evals.probe = dict(type="plugin_embedding_norm", every=1, scale=2.0)
    config_lib.validate(c)
    result = train.run(c, str(tmp_path / "run"))
    assert plugin.TRACED, "the registered kernel was never called"
    assert set(result.evals) == {1, 2} and result.evals[2]["probe_norm"] > 0
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert [r["step"] for r in records if "probe_norm" in r] == [1, 2]
    # A misspelt option of the plugin's evaluation is refused by name.
    with c.unlocked():
      c.evals.probe = dict(type="plugin_embedding_norm", every=1, scael=2.0)
    try:
      config_lib.validate(c)
    except config_lib.ConfigError as e:
      assert "unknown option(s) ['evals.probe.scael']" in str(e) and "['scale']" in str(e)
    else:
      raise AssertionError("a misspelt evaluation option was accepted")
  finally:
    sys.modules.pop("llama_plugin", None)
