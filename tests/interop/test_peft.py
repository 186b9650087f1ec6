"""The adapter workflow end to end: an HF base converted, an adapter trained on it by the
trainer, exported with `python -m llama_jax.convert --from=workdir --to=peft` and loaded by HF
peft onto the HF base (same logits); `--merge_adapters` gives a plain HF model with the same
logits; `load_hf(base, adapter=...)` reads it back."""
import subprocess
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import llama_jax
from llama_jax.interop import convert, hf
from llama_jax.training import loop as train
from tests.references import peft_reference as ref
from tests.training.test_loop import cache, corpus, small_config  # noqa: F401  (fixtures)

ROOT = Path(__file__).resolve().parents[2]
TOKENS = np.random.RandomState(3).randint(0, 320, size=(2, 16))


@pytest.fixture(scope="module")
def hf_base(tmp_path_factory):
  """An HF LlamaForCausalLM directory with the trainer's small shapes (vocab 320)."""
  _, _, cfg, params = ref.base_and_config(
      seed=4, vocab_size=320, intermediate_size=128, max_position_embeddings=64)
  path = tmp_path_factory.mktemp("hf_base") / "base"
  hf.write_hf(path, cfg, params)
  return path


def _run(corpus, cache, tmp_path, hf_base, name, **options):  # noqa: F811
  converted = tmp_path / "converted"
  convert.convert(hf_base, converted, "hf", "llama_jax")
  c = small_config(corpus, cache)
  with c.unlocked():
    c.steps, c.eval_every, c.checkpoint_every, c.sample_tokens = 2, 0, 2, 0
    c.optim.peak_lr = 0.05  # visible changes in two steps
    c.init_from = str(converted)
    c.adapter.name = name
    c.adapter[name].update(options)
  train.run(c, str(tmp_path / "run"))
  return tmp_path / "run"


def _cli(*args):
  out = subprocess.run([sys.executable, "-m", "llama_jax.convert", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600)
  return out


@pytest.mark.parametrize("name,options", [
    ("lora", dict(rank=4, alpha=8.0, targets=("q", "k", "v", "up", "down"), dora=True)),
    ("prefix", dict(num_virtual_tokens=5))])
def test_trained_adapter_exports_to_peft(corpus, cache, tmp_path, hf_base, name, options):  # noqa: F811
  from peft import PeftModel
  from transformers import LlamaForCausalLM
  run = _run(corpus, cache, tmp_path, hf_base, name, **options)
  ours = np.asarray(llama_jax.load_model(run)(jnp.asarray(TOKENS)))
  out = _cli("--from=workdir", "--to=peft", f"--src={run}", f"--dst={tmp_path / 'adapter'}")
  assert out.returncode == 0, out.stderr[-2000:]
  base_dir = hf_base
  model = LlamaForCausalLM.from_pretrained(base_dir).eval()  # peft changes it in place
  peft_model = PeftModel.from_pretrained(model, tmp_path / "adapter").eval()
  want = ref.torch_logits(peft_model, TOKENS)
  assert np.max(np.abs(ours - want)) <= 1e-4
  # And back: the HF base with the exported adapter, through load_hf.
  again = np.asarray(llama_jax.load_hf(base_dir, adapter=tmp_path / "adapter")(
      jnp.asarray(TOKENS)))
  np.testing.assert_allclose(again, ours, atol=1e-5, rtol=0)

  if name == "lora":
    merged = tmp_path / "merged"
    out = _cli("--from=workdir", "--to=hf", "--merge_adapters", f"--src={run}",
               f"--dst={merged}")
    assert out.returncode == 0, out.stderr[-2000:]
    plain_hf = LlamaForCausalLM.from_pretrained(merged).eval()
    assert np.max(np.abs(ref.torch_logits(plain_hf, TOKENS) - ours)) <= 1e-4
  else:  # prefix tuning cannot be folded into weights
    out = _cli("--from=workdir", "--to=hf", "--merge_adapters", f"--src={run}",
               f"--dst={tmp_path / 'merged'}")
    assert out.returncode != 0
    assert "adapter 'prefix' cannot be merged into the base weights" in out.stderr
    assert not (tmp_path / "merged").exists()
  out = _cli("--from=workdir", "--to=hf", f"--src={run}", f"--dst={tmp_path / 'plain'}")
  assert out.returncode != 0 and "export the adapter with --to=peft" in out.stderr
  assert not (tmp_path / "plain").exists()
