"""Builders for small random HF `LlamaForCausalLM` models used as the independent reference."""
from __future__ import annotations

import numpy as np


def hf_config(rope_parameters=None, **overrides):
  from transformers import LlamaConfig
  kwargs = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                rms_norm_eps=1e-5, tie_word_embeddings=False, attn_implementation="eager")
  kwargs.update(overrides)
  if rope_parameters is not None:
    kwargs["rope_parameters"] = rope_parameters
  return LlamaConfig(**kwargs)


def hf_model(config, seed=0):
  import torch
  from transformers import LlamaForCausalLM
  torch.manual_seed(seed)
  model = LlamaForCausalLM(config).eval()
  # HF initialises norms to 1; randomise them so a wrong norm mapping cannot hide.
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model


def hf_logits(model, tokens: np.ndarray) -> np.ndarray:
  import torch
  with torch.no_grad():
    return model(torch.as_tensor(tokens)).logits.float().numpy()


def hf_state(model) -> dict[str, np.ndarray]:
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
