"""Max |Δlogit| between llama_jax and HF `LlamaForCausalLM` for every HF RoPE type.

  python experiments/hf_parity.py

Random small HF models (GQA, 2 layers, head_dim 16, float32, CPU), converted through the HF weight
map, evaluated at 80 tokens — beyond both original_max_position_embeddings (32) and
max_position_embeddings (64). Prints one line per case; tests/model/test_llama.py asserts <= 1e-4
for the same cases.
"""
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llama_jax.interop import hf_layout
from llama_jax.model import spec
from llama_jax.model.config import ModelConfig

ORIGINAL, SEQ = 32, 80
ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.5},
    "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": ORIGINAL},
    "yarn_mscale": {"rope_type": "yarn", "factor": 8.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                    "original_max_position_embeddings": ORIGINAL},
    "llama3": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": ORIGINAL},
    "longrope": {"rope_type": "longrope", "original_max_position_embeddings": ORIGINAL,
                 "short_factor": [1.0 + 0.05 * i for i in range(8)],
                 "long_factor": [1.0 + 1.5 * i for i in range(8)]},
}


def hf_model(rope_parameters):
  kwargs = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                max_position_embeddings=64, rms_norm_eps=1e-5, attn_implementation="eager")
  if rope_parameters is not None:
    kwargs["rope_parameters"] = dict(rope_parameters, rope_theta=10000.0)
  config = LlamaConfig(**kwargs)
  torch.manual_seed(0)
  return LlamaForCausalLM(config).eval(), config


def main():
  tokens = np.random.RandomState(0).randint(0, 128, size=(2, SEQ))
  print(f"{'case':24s} {'max |dlogit|':>12s} {'max |logit|':>11s}")
  for name, rope in ROPES.items():
    model, config = hf_model(rope)
    with torch.no_grad():
      want = model(torch.as_tensor(tokens)).logits.float().numpy()
    cfg = ModelConfig.from_hf(config.to_dict())
    state = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    ours = spec.from_params(cfg, hf_layout.hf_to_params(cfg, state.__getitem__))
    got = np.asarray(ours(tokens))
    print(f"{name:24s} {np.max(np.abs(got - want)):12.2e} {np.max(np.abs(want)):11.3f}")


if __name__ == "__main__":
  main()
