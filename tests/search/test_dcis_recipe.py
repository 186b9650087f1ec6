"""configs/dcis_7b.py follows the DCIS fine-tuning table (reference notes §9)."""
import json
import math

from llama_jax.model.config import ModelConfig
from llama_jax.search import factors
from llama_jax.training import recipes, validation

dcis_7b = recipes.module("dcis_7b")


def _model(c):
  return ModelConfig.from_dict(c.model.to_dict())


def test_recipe_follows_the_fine_tuning_table():
  c = dcis_7b.get_config()
  tc = validation.validate(validation.lock(c), n_devices=dcis_7b.DEVICES, check_paths=False)
  assert (c.steps, c.batch_size, c.seq_len, c.grad_accum) == (400, 64, 16384, 8)
  assert c.batch_size // c.grad_accum // dcis_7b.DEVICES == 2  # 2 per GPU x 4 GPUs x 8 accum
  o = c.optim
  assert (o.peak_lr, o.warmup_steps, o.schedule, o.final_lr_fraction) == (2e-5, 20, "linear", 0)
  assert (o.b1, o.b2, o.eps, o.weight_decay) == (0.9, 0.95, 1e-8, 0.0)
  model = tc.model
  assert (model.dtype, model.remat, model.max_position_embeddings) == ("bfloat16", "full", 65536)
  rope = model.rope
  assert (rope.rope_type, rope.factor, rope.original_max_position_embeddings) == (
      "longrope", 16.0, 4096)
  assert rope.attention_factor == math.log(16) / 10 + 1
  # Without a search result: DCIS's start, the YaRN-equivalent factors (pairs 0-20 keep 1,
  # pairs 46-63 get s, Llama 2's ramp bounds 20/46).
  lam = rope.long_factor
  assert rope.short_factor == lam and len(lam) == 64
  assert lam[:21] == (1.0,) * 21 and lam[46:] == (16.0,) * 18


def test_recipe_takes_a_search_result(tmp_path):
  lam = [1.0 + i / 10 for i in range(64)]
  path = tmp_path / "rope.json"
  path.write_text(json.dumps(factors.rope_parameters(lam, 16, 4096, 10000.0)))
  rope = _model(dcis_7b.get_config(str(path))).rope
  assert rope.long_factor == tuple(lam) == rope.short_factor and rope.rope_type == "longrope"
