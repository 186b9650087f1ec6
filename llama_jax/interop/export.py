"""HF exports during training, as a trainer hook: `<workdir>/export/step_<N>/` every
`export_every` steps and at the end of the run.

Each export is an HF `LlamaForCausalLM` directory (config.json + safetensors, the run's tokenizer
beside it when the workdir has one) that `transformers` loads as it is. The parameters are
gathered to the host once per export; only process 0 writes.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from llama_jax.interop import hf
from llama_jax.model.config import ModelConfig
from llama_jax.training import workdir as workdir_lib
from llama_jax.training.hooks import Periodic

EXPORT_DIR = "export"


def export_dir(workdir: str, step: int) -> Path:
  return Path(workdir) / EXPORT_DIR / f"step_{step}"


def hook(workdir: str, every: int, model_cfg: ModelConfig) -> Periodic:
  """The periodic action that writes an HF export of the current parameters."""

  def action(step: int, state) -> None:
    params = state.params
    if jax.process_count() > 1:
      params = multihost_utils.process_allgather(params, tiled=True)
    params = jax.tree.map(np.asarray, jax.device_get(params))
    if jax.process_index() != 0:
      return
    dst = export_dir(workdir, step)
    dst.parent.mkdir(parents=True, exist_ok=True)
    hf.write_hf(dst, model_cfg, params, overwrite=True)
    tokenizer = workdir_lib.tokenizer_path(workdir)
    if tokenizer:
      shutil.copyfile(tokenizer, dst / workdir_lib.TOKENIZER_FILE)

  return Periodic("export", every, action)
