"""A benchmark peer in a child process, driven through a pipe (the HF + torch side runs there).

The child is started with the "spawn" method, so the two runtimes' thread pools never share a
process and its resident memory is its own; `malloc` picks the heap it starts on
(`core.allocator.for_children`). Its worker receives the pipe's end first, then `args`, answers
every command with a dict holding "ok", and returns on "close".
"""
from __future__ import annotations

import multiprocessing

from llama_jax.core import allocator

# The HF config fields a random LlamaForCausalLM of a llama_jax model's shape needs.
HF_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
             "rms_norm_eps", "tie_word_embeddings", "rope_parameters", "rope_theta",
             "rope_scaling", "attention_bias", "mlp_bias")


def hf_config(model_cfg) -> dict:
  """The HF LlamaConfig fields of `model_cfg` (as `ModelConfig.to_hf` writes them)."""
  return {k: v for k, v in model_cfg.to_hf().items() if k in HF_FIELDS}


class Child:
  """Starts `worker(conn, *args)` in a child process; `ready` is its first answer."""

  def __init__(self, worker, args: tuple, malloc: str | None = None):
    ctx = multiprocessing.get_context("spawn")
    self._conn, child_end = ctx.Pipe()
    self._proc = ctx.Process(target=worker, args=(child_end, *args), daemon=True)
    with allocator.for_children(malloc):
      self._proc.start()
    self.ready = self._reply()

  def _reply(self) -> dict:
    if not self._conn.poll(3600):
      raise RuntimeError("the HF/torch benchmark process did not answer within an hour")
    msg = self._conn.recv()
    if not msg.get("ok"):
      raise RuntimeError(f"HF/torch benchmark process failed: {msg.get('error')}")
    return msg

  def _call(self, cmd, arg=None) -> dict:
    self._conn.send((cmd, arg))
    return self._reply()

  def close(self) -> None:
    if self._proc.is_alive():
      try:
        self._call("close")
      except (RuntimeError, OSError, EOFError):
        pass
      self._proc.join(timeout=30)
      if self._proc.is_alive():
        self._proc.kill()
