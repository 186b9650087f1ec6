"""The baseline: HF transformers `LlamaForCausalLM` + `torch.optim.AdamW`, same shapes and work.

Runs in a child process, driven step by step through a pipe, so that
- `bench.py` can interleave its steps with the JAX steps (drifting machine load hits both alike);
- the two runtimes' thread pools never share a process, and the child's peak RSS (less its RSS
  before the model existed) measures the baseline's memory: model, optimizer and activations.

The step mirrors `training.step`: float32 logits, mean cross-entropy over the loss mask, backward,
global-norm clipping, AdamW with the config's betas, eps and weight decay. Attention is HF's
`sdpa` (PyTorch's fused scaled-dot-product attention), its fastest CPU path.

With an adapter (LoRA incl. rsLoRA/DoRA, or prefix tuning) the model is HF peft's
`get_peft_model` of it with the same options, and AdamW updates the trainable (adapter)
parameters only, as peft training does.
"""
from __future__ import annotations

import os
import resource
import time

from llama_jax.perf import child


def _rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peft_config(adapter):
  """The HF peft config of a `llama_jax.adapters` adapter (LoRA, prefix), as a dict of kwargs
  with the peft type under "peft_type"; None for adapters peft does not have."""
  if adapter is None:
    return None
  if adapter.name == "lora":
    names = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj", "gate": "gate_proj",
             "up": "up_proj", "down": "down_proj"}
    return {"peft_type": "LORA", "r": adapter.rank, "lora_alpha": adapter.alpha,
            "lora_dropout": adapter.dropout, "use_rslora": adapter.rslora,
            "use_dora": adapter.dora, "target_modules": [names[t] for t in adapter.targets]}
  if adapter.name == "prefix":
    return {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": adapter.num_virtual_tokens}
  raise ValueError(f"HF peft has no {adapter.name!r} adapter (LLM-Adapters' bottleneck adapters "
                   "live in its own fork); no baseline")


def _peft(model, peft: dict):
  from peft import LoraConfig, PrefixTuningConfig, get_peft_model
  peft = dict(peft)
  kind = peft.pop("peft_type")
  config = (LoraConfig(**peft, task_type="CAUSAL_LM") if kind == "LORA"
            else PrefixTuningConfig(**peft, task_type="CAUSAL_LM"))
  return get_peft_model(model, config)


def _worker(conn, hf_config: dict, optim: dict, threads: int, device: str, peft: dict | None):
  import numpy as np  # noqa: F401 - batches arrive as NumPy arrays
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  base_rss = _rss_bytes()
  cfg = LlamaConfig(**hf_config, attn_implementation="sdpa")
  model = LlamaForCausalLM(cfg).to(device)
  if peft is not None:
    model = _peft(model, peft)
  model.train()
  trainable = [p for p in model.parameters() if p.requires_grad]
  opt = torch.optim.AdamW(trainable, lr=optim["lr"], betas=optim["betas"],
                          eps=optim["eps"], weight_decay=optim["weight_decay"])
  batch = None
  from llama_jax.core import allocator  # configured when this child imported llama_jax
  conn.send({"ok": True, "params": sum(p.numel() for p in model.parameters()),
             "trainable": sum(p.numel() for p in trainable),
             "allocator": allocator.describe()})

  def step():
    logits = model(input_ids=batch["tokens"]).logits.float()
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), batch["targets"].reshape(-1), reduction="none")
    mask = batch["loss_mask"].reshape(-1)
    loss = (nll * mask).sum() / mask.sum().clamp(min=1.0)
    loss.backward()
    if optim["clip_norm"] > 0:
      torch.nn.utils.clip_grad_norm_(trainable, optim["clip_norm"])
    opt.step()
    opt.zero_grad(set_to_none=True)
    if device != "cpu":
      torch.cuda.synchronize()
    return float(loss.detach())

  while True:
    cmd, arg = conn.recv()
    try:
      if cmd == "batch":
        batch = {k: torch.as_tensor(v).to(device) for k, v in arg.items()}
        batch["tokens"] = batch["tokens"].long()
        batch["targets"] = batch["targets"].long()
        conn.send({"ok": True})
      elif cmd == "step":
        start = time.perf_counter()
        loss = step()
        conn.send({"ok": True, "seconds": time.perf_counter() - start, "loss": loss})
      elif cmd == "memory":
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        gpu = torch.cuda.max_memory_allocated() if device != "cpu" else None
        conn.send({"ok": True, "peak_rss_bytes": peak - base_rss, "gpu_peak_bytes": gpu})
      elif cmd == "close":
        conn.send({"ok": True})
        return
    except Exception as e:
      conn.send({"ok": False, "error": f"{type(e).__name__}: {e}"})


class TorchStep(child.Child):
  """A child process holding the HF model and its optimizer for one batch shape."""

  def __init__(self, model_cfg, optim_cfg, threads: int | None = None, device: str = "cpu",
               adapter=None, malloc: str | None = None):
    hf = child.hf_config(model_cfg)
    optim = {"lr": float(optim_cfg.peak_lr), "betas": (float(optim_cfg.b1), float(optim_cfg.b2)),
             "eps": float(optim_cfg.eps), "weight_decay": float(optim_cfg.weight_decay),
             "clip_norm": float(optim_cfg.clip_norm)}
    self.threads = threads or len(os.sched_getaffinity(0))
    super().__init__(_worker, (hf, optim, self.threads, device, peft_config(adapter)), malloc)
    self.num_params, self.num_trainable = self.ready["params"], self.ready["trainable"]
    self.allocator = self.ready["allocator"]

  def set_batch(self, batch: dict) -> None:
    self._call("batch", batch)

  def step(self) -> float:
    msg = self._call("step")
    self.last_loss = msg["loss"]
    return msg["seconds"]

  def memory(self) -> dict:
    return self._call("memory")

