"""The inference baseline: HF transformers `LlamaForCausalLM` scoring windows and generating.

The peer of `perf/infer_bench.py` (`python -m llama_jax.bench --mode=eval|generate`). Like the
train-step baseline (`torch_step.py`) it runs in a child process driven through a pipe, so its
calls interleave with the JAX ones (drifting machine load hits both alike) and the two
runtimes' thread pools never share a process.

The child builds a random `LlamaForCausalLM` (seeded, float32, sdpa attention) of the
benchmark's shape and saves it with `save_pretrained`; the parent loads the same weights with
`llama_jax.load_hf`, so both sides compute the same numbers and the records can say so.

- `score`: the YaRN perplexity protocol as HF users run it — one `model(input_ids,
  attention_mask)` per batch of windows (full [B, T, vocab] logits), float32 log-softmax, NLL of
  the scored targets summed per window. Returns the per-window sums, so the parent checks they
  equal llama_jax's.
- `forward`: the same batches, logits only (`model(input_ids)` as a user calls it).
- `generate`: `model.generate` greedy (`do_sample=False`), exactly `new` tokens
  (`min_new_tokens` = `max_new_tokens`, no EOS), with a `dynamic` or `static` cache; its
  output tokens are returned for the parity check.
"""
from __future__ import annotations

import os
import time

from llama_jax.core import allocator
from llama_jax.perf import child


def _worker(conn, hf_config: dict, threads: int, save_dir: str):
  import numpy as np
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  cfg = LlamaConfig(**hf_config, attn_implementation="sdpa")
  model = LlamaForCausalLM(cfg).eval()
  # Small weights (std 0.02 like the model's init) keep random logits in a sane range.
  model.save_pretrained(save_dir, safe_serialization=True)
  conn.send({"ok": True, "params": sum(p.numel() for p in model.parameters()),
             "allocator": allocator.describe()})

  @torch.inference_mode()
  def score(batch):
    tokens = torch.as_tensor(batch["tokens"]).long()
    mask = torch.as_tensor(batch["segment_ids"] > 0).long()
    logits = model(input_ids=tokens, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    nll = -logp.gather(-1, torch.as_tensor(batch["targets"]).long()[..., None])[..., 0]
    weights = torch.as_tensor(batch["weights"])
    return (nll * weights).sum(-1).double().numpy(), weights.sum(-1).double().numpy()

  @torch.inference_mode()
  def forward(batch):  # what `model(input_ids)` costs: the logits, nothing after them
    tokens = torch.as_tensor(batch["tokens"]).long()
    mask = torch.as_tensor(batch["segment_ids"] > 0).long()
    return model(input_ids=tokens, attention_mask=mask).logits

  @torch.inference_mode()
  def generate(prompts, new, cache):
    tokens = torch.as_tensor(prompts).long()
    out = model.generate(tokens, attention_mask=torch.ones_like(tokens), do_sample=False,
                         max_new_tokens=new, min_new_tokens=new, cache_implementation=cache,
                         pad_token_id=0, eos_token_id=None)
    return out[:, tokens.shape[1]:].numpy()

  while True:
    cmd, arg = conn.recv()
    try:
      if cmd == "score":  # a list of window batches: one protocol pass at one length
        start = time.perf_counter()
        sums, counts = zip(*(score(b) for b in arg))
        seconds = time.perf_counter() - start
        conn.send({"ok": True, "seconds": seconds, "sums": np.concatenate(sums),
                   "counts": np.concatenate(counts)})
      elif cmd == "forward":
        start = time.perf_counter()
        for b in arg:
          forward(b)
        conn.send({"ok": True, "seconds": time.perf_counter() - start})
      elif cmd == "generate":
        start = time.perf_counter()
        out = generate(arg["prompts"], arg["new"], arg["cache"])
        conn.send({"ok": True, "seconds": time.perf_counter() - start, "tokens": out})
      elif cmd == "close":
        conn.send({"ok": True})
        return
    except Exception as e:  # reported to the parent, which records it
      conn.send({"ok": False, "error": f"{type(e).__name__}: {e}"})


class TorchInference(child.Child):
  """A child process holding a random HF model of `model_cfg`'s shape, saved to `save_dir`."""

  def __init__(self, model_cfg, save_dir: str, threads: int | None = None,
               malloc: str | None = None):
    hf = child.hf_config(model_cfg)
    self.threads = threads or len(os.sched_getaffinity(0))
    super().__init__(_worker, (hf, self.threads, str(save_dir)), malloc)
    self.num_params, self.allocator = self.ready["params"], self.ready["allocator"]

  def score(self, batches: list[dict]) -> dict:
    """One pass over window batches: {'seconds', 'sums', 'counts'} (per window row)."""
    return self._call("score", batches)

  def forward(self, batches: list[dict]) -> dict:
    """The logits of every batch (nothing else): {'seconds'}."""
    return self._call("forward", batches)

  def generate(self, prompts, new: int, cache: str) -> dict:
    """Greedy generation of exactly `new` tokens: {'seconds', 'tokens' int[B, new]}."""
    return self._call("generate", {"prompts": prompts, "new": new, "cache": cache})

