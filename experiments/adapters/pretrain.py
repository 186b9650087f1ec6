r"""The adapters miniature's base model: a tiny LLaMA pretrained on arithmetic text.

Reproduces: the pretrained base of LLM-Adapters' comparison (Hu et al. 2023, Table 1: LLaMA-7B
  under full fine-tuning and four adapter families), in miniature. The corpus (`make_data.py`)
  holds additions and subtractions over all of 1..20 as past-tense stories and bare equations,
  and questions in the instruction template whose answer is copied from the question (never an
  arithmetic question): like LLaMA, the base knows the arithmetic, the template's words and how
  to answer with a number from the question; fine-tuning teaches the task.
Command (the driver runs it once and caches it in <work>/pretrain):
  python experiments/adapters/make_data.py --out=runs/adapters_miniature/data
  python -m llama_jax.train --config=experiments/adapters/pretrain.py \
      --workdir=runs/adapters_miniature/pretrain
  The argument `:work=DIR,scale=smoke` (after the file name) moves the data and caches to DIR
  and shrinks the run to a few steps (the CI smoke test).
Model: d_model 128, 4 layers, 4 heads (2 key/value heads), SwiGLU 352, vocab 1024 (the trained
  tokenizer has ~830 pieces), float32: 1.00M parameters. AdamW b=(0.9, 0.95), weight decay 0.1,
  peak lr 3e-3 (configs/tiny.py's), 30 warmup steps then cosine to 10%, clipping 1.0; 1,200
  steps of 8 packed rows x 256 tokens (2.5M tokens, about 2.2 passes over the ~1.1M-token
  corpus).
Hardware: a 2-core CPU (one device).
Expected (measured 2026-12-02, quiet 2-core VM): held-out loss 0.73 / 0.62 / 0.50 / 0.45 at steps
  100 / 400 / 800 / 1,200; the greedy sample copies and adds ("Tom had 13 apples. He bought 5
  more, so he had" -> "13 + 5 = 18 stickers."). Time: 348 s.
"""
import os

from llama_jax.core.errors import ConfigError
from llama_jax.training import defaults as base

DEVICES = 1
DEFAULT_WORK = "runs/adapters_miniature"


def options(arg):
  """{work, scale} from the recipe argument (`work=DIR,scale=full|smoke`)."""
  given = base.recipe_options(arg, work=str, scale=str)
  out = {"work": given.get("work", DEFAULT_WORK), "scale": given.get("scale", "full")}
  if out["scale"] not in ("full", "smoke"):
    raise ConfigError(f"recipe argument scale={out['scale']!r}; allowed: full, smoke")
  return out


def model():
  """The base model's fields (the fine-tunes use the same)."""
  return base.model_fields("tiny", vocab_size=1024, d_model=128, n_layers=4, n_heads=4,
                           n_kv_heads=2, ffn_dim=352, max_position_embeddings=256)


def get_config(arg=None):
  o = options(arg)
  data = os.path.join(o["work"], "data")
  c = base.get_config()
  c.model = model()
  c.seq_len = 256
  c.batch_size = 8
  c.steps = 1200
  c.optim.update(dict(peak_lr=3e-3, warmup_steps=30, schedule="cosine", final_lr_fraction=0.1))
  c.data.update(dict(files=os.path.join(data, "corpus", "*.txt"),
                     tokenizer=os.path.join(data, "tokenizer.model"),
                     cache_dir=os.path.join(o["work"], "cache"), heldout_fraction=0.02))
  c.log_every = 20
  c.eval_every = 100
  c.eval_batches = 4
  c.checkpoint_every = c.steps
  c.sample_prompt = "Tom had 13 apples. He bought 5 more, so he had"
  c.sample_tokens = 16
  if o["scale"] == "smoke":
    c.steps, c.batch_size, c.optim.warmup_steps = 3, 2, 1
    c.log_every, c.eval_every, c.checkpoint_every, c.sample_tokens = 1, 0, 3, 0
  return c
