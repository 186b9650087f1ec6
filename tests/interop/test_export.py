"""HF exports as a training hook: every N steps and at the end, loadable by transformers with
the run's logits."""
import jax.numpy as jnp
import numpy as np

from llama_jax.interop import export
from llama_jax.model import spec as spec_lib
from llama_jax.training import loop as train
from llama_jax.training import validation as config_lib
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)


def test_periodic_hf_exports_load_in_transformers(corpus, cache, tmp_path):  # noqa: F811
  import torch
  from transformers import LlamaForCausalLM
  c = small_config(corpus, cache, steps=3, eval_every=0, checkpoint_every=0, sample_tokens=0)
  cfg = config_lib.validate(c).model
  workdir = str(tmp_path / "run")
  result = train.run(c, workdir, hooks=[export.hook(workdir, 2, cfg)])
  assert sorted(p.name for p in (tmp_path / "run" / "export").iterdir()) == ["step_2", "step_3"]
  final = export.export_dir(workdir, 3)
  assert (final / "tokenizer.model").is_file()
  hf = LlamaForCausalLM.from_pretrained(final, dtype=torch.float32).eval()
  tokens = np.random.RandomState(0).randint(0, cfg.vocab_size, (2, 16))
  with torch.no_grad():
    want = hf(torch.as_tensor(tokens)).logits.numpy()
  got = np.asarray(spec_lib.from_params(cfg, result.state.params)(jnp.asarray(tokens)))
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
