"""The README's Python examples run as written (only the checkpoint path is swapped for a tiny
random HF model, and `input_ids` is provided)."""
import re
from pathlib import Path

import jax.numpy as jnp
import numpy as np

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def python_blocks(section: str) -> list[str]:
  start = README.index(section)
  end = README.find("\n## ", start + len(section))
  return re.findall(r"```python\n(.*?)```", README[start:end if end > 0 else None], re.S)


def test_quick_tour_runs(tmp_path):
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  torch.manual_seed(0)
  config = LlamaConfig(vocab_size=5000, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
  LlamaForCausalLM(config).save_pretrained(tmp_path / "hf")
  (code,) = python_blocks("## Quick tour")
  assert "path/to/Llama-2-7b-hf" in code
  scope = {"input_ids": jnp.asarray(np.random.RandomState(0).randint(0, 5000, (2, 7)))}
  exec(code.replace("path/to/Llama-2-7b-hf", str(tmp_path / "hf")), scope)
  assert scope["logits"].shape == (2, 7, 5000) and scope["logits"].dtype == jnp.float32
  assert len(scope["new_tokens"]) == 1 and len(scope["new_tokens"][0]) == 20


def test_adding_a_rope_method_is_one_file():
  from llama_jax import rope
  from llama_jax.model import llama
  from llama_jax.model.config import preset
  from llama_jax.rope import registry
  (code,) = python_blocks("### Adding a method")
  assert "my_method" not in rope.names()
  exec(code, {"__name__": "llama_jax.rope.my_method"})
  try:
    cfg = preset("tiny").replace(rope=dict(rope_type="my_method", factor=4.0))
    logits = llama.init(cfg)(jnp.zeros((1, 8), jnp.int32))
    assert logits.shape == (1, 8, cfg.vocab_size)
  finally:
    # The example's method is not a module of the package; later tests see the real registry.
    registry.METHODS.unregister("my_method")
