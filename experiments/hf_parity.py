"""Max |Δlogit| between llama_jax and HF `LlamaForCausalLM` for every HF RoPE type.

  python experiments/hf_parity.py

Random small HF models (GQA, 2 layers, head_dim 16, float32, CPU), converted through the HF weight
map, evaluated at 80 tokens — beyond both original_max_position_embeddings (32) and
max_position_embeddings (64). Prints one line per case; the tests assert <= 1e-4.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import hf_reference as hf  # noqa: E402
from test_model import HF_ROPES, SEQ, convert  # noqa: E402


def main():
  tokens = np.random.RandomState(0).randint(0, 128, size=(2, SEQ))
  print(f"{'case':24s} {'max |dlogit|':>12s} {'max |logit|':>11s}")
  for name, params in HF_ROPES.items():
    if params is not None:
      params = dict(params, rope_theta=10000.0)
    cfg = hf.hf_config(params, head_dim=16)
    model = hf.hf_model(cfg)
    want = hf.hf_logits(model, tokens)
    got = np.asarray(convert(model, cfg)(tokens))
    print(f"{name:24s} {np.max(np.abs(got - want)):12.2e} {np.max(np.abs(want)):11.3f}")


if __name__ == "__main__":
  main()
