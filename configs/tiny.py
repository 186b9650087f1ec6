"""The embedded default: a small LLaMA trained on this machine's Python standard library.

Command:   python -m llama_jax.train --config=configs/tiny.py --workdir=/tmp/llama_tiny
Hardware:  any CPU (sized for 2 cores); also runs unchanged on one GPU/TPU.
Data:      the .py sources of the running Python's standard library; a sentencepiece
           tokenizer is trained on them at first run and cached.
Expected:  held-out perplexity falls steadily; see README for measured numbers and time.
"""
from configs import base

DEVICES = 1  # one CPU (or any single device); the mesh is data=-1, so more devices also work


def get_config():
  c = base.get_config()
  c.model = base.model_fields(
      "tiny", vocab_size=2048, d_model=256, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=704,
      max_position_embeddings=256)
  c.seq_len = 256
  c.batch_size = 16
  c.steps = 600
  c.optim.peak_lr = 2e-3
  c.optim.warmup_steps = 50
  c.log_every = 10
  c.eval_every = 100
  c.checkpoint_every = 200
  return c
