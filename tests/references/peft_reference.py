"""Independent references for the adapters: HF peft on LlamaForCausalLM, PyTorch forward hooks
for LLM-Adapters' bottleneck adapters, and float64 NumPy written from the definitions."""
from __future__ import annotations

import math

import numpy as np

from tests.references import hf_reference as hf

HF_NAMES = {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
            "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
            "down": "mlp.down_proj"}


def base_and_config(seed=0, **overrides):
  """(HF model, HF config, our ModelConfig, our base parameters) of a small GQA LLaMA."""
  from llama_jax.interop import hf_layout
  from llama_jax.model.config import ModelConfig
  hf_cfg = hf.hf_config(None, **{"head_dim": 16, **overrides})
  model = hf.hf_model(hf_cfg, seed=seed)
  cfg = ModelConfig.from_hf(hf_cfg.to_dict())
  return model, hf_cfg, cfg, hf_layout.hf_to_params(cfg, hf.hf_state(model).__getitem__)


def peft_lora(model, **kw):
  """peft LoRA with random A and B (init_lora_weights=False), no dropout, in eval mode."""
  from peft import LoraConfig, get_peft_model
  kw = {"lora_dropout": 0.0, "init_lora_weights": False, "task_type": "CAUSAL_LM", **kw}
  return get_peft_model(model, LoraConfig(**kw)).eval()


def torch_logits(model, tokens, **kw) -> np.ndarray:
  import torch
  with torch.no_grad():
    return model(input_ids=torch.as_tensor(tokens), **kw).logits.float().numpy()


# ------------------------------------------------------------------------------ bottleneck
ACTIVATIONS = {"tanh": np.tanh, "relu": lambda x: np.maximum(x, 0),
               "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
               "sigmoid": lambda x: 1 / (1 + np.exp(-x)), "silu": lambda x: x / (1 + np.exp(-x))}


def bottleneck_np(u, down, up, scale, act="tanh"):
  """f(u) = s · act(u·D)·U in float64; u [..., *A], down [*A, b], up [b, *C]."""
  u = np.asarray(u, np.float64)
  a_dims = down.ndim - 1
  h = u.reshape(u.shape[:u.ndim - a_dims] + (-1,)) @ np.asarray(down, np.float64).reshape(
      -1, down.shape[-1])
  out = ACTIVATIONS[act](h) @ np.asarray(up, np.float64).reshape(up.shape[0], -1)
  return scale * out.reshape(u.shape[:u.ndim - a_dims] + up.shape[1:])


def hook_bottleneck(model, tensors: dict, placement_of, scaling, act="tanh"):
  """Adds LLM-Adapters' bottleneck forward to `model`'s linears with torch hooks, written from
  the fork's definitions (mh_adapter: W(x + f(x)); output_adapter: h + f(h); parallel_adapter:
  Wx + f(x)), with the weights of a state dict in the fork's key names. Returns the handles."""
  import torch
  acts = {"tanh": torch.tanh, "relu": torch.relu}
  handles = []
  for i, layer in enumerate(model.model.layers):
    for target, name in HF_NAMES.items():
      key = f"base_model.model.model.layers.{i}.{name}"
      if f"{key}.adapter_down.weight" not in tensors:
        continue
      down = torch.as_tensor(np.asarray(tensors[f"{key}.adapter_down.weight"]))
      up = torch.as_tensor(np.asarray(tensors[f"{key}.adapter_up.weight"]))
      s = (float(np.asarray(tensors[f"{key}.adapter_scaling"]).reshape(()))
           if scaling == "learned" else float(scaling))
      f = lambda u, down=down, up=up, s=s: acts[act](u @ down.T) @ up.T * s
      module = layer.get_submodule(name)
      placement = placement_of(target)
      if placement == "before":
        handles.append(module.register_forward_pre_hook(
            lambda m, args, f=f: (args[0] + f(args[0]),)))
      elif placement == "after":
        handles.append(module.register_forward_hook(lambda m, args, out, f=f: out + f(out)))
      else:
        handles.append(module.register_forward_hook(
            lambda m, args, out, f=f: out + f(args[0])))
  return handles
