"""The training loop: `run(config, workdir)`, read top to bottom.

  validate the config (no device work yet) → tokenizer and data iterators (a bad corpus fails
  here, before anything is written) → mesh → abstract state → restore the latest checkpoint in
  the workdir, else `init_from` weights with a fresh optimizer, else a random init (all created
  directly sharded) → steps, with periodic logs (console, metrics.jsonl, TensorBoard), held-out
  evaluation and checkpoints (state + data iterator position) → a final checkpoint, evaluation
  and a greedy sample of `sample_prompt`.

SIGTERM/SIGINT stop the loop after the current step; the state is saved and the process exits
cleanly, and rerunning the same command resumes exactly where it stopped (same data order, same
numbers). Every process runs the same program (SPMD); only process 0 prints and writes logs.
Each process loads batch_size / process_count rows; `sharding.global_batch` assembles the global
batch.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import os
import zlib
from typing import Any

from llama_jax.training import validation as config_lib
from llama_jax.training import workdir as workdir_lib

log = logging.getLogger("llama_jax.train")


# ------------------------------------------------------------------------------ helpers
@dataclasses.dataclass
class RunResult:
  """What `run` returns: per-step training numbers, evaluations and the final state."""
  start_step: int
  final_step: int
  stopped_early: bool  # a SIGTERM/SIGINT ended the run (a checkpoint was saved)
  losses: dict[int, float]  # step → training loss (steps that were fetched: every step)
  data_crc32: dict[int, int]  # step → CRC32 of the tokens this process fed that step
  evals: dict[int, dict[str, float]]  # step → {"eval_loss", "eval_perplexity", "eval_tokens"}
  sample: str | None
  state: Any


def _summary(tc, mesh, n_devices: int, state_bytes: int, flops_per_token: float) -> str:
  import jax
  cfg, c = tc.model, tc.config
  devices = jax.devices()
  kinds = sorted({d.device_kind for d in devices})
  mesh_str = " x ".join(f"{k}={v}" for k, v in mesh.shape.items())
  tokens = c.batch_size * c.seq_len
  return "\n".join([
      f"devices   {n_devices} ({', '.join(kinds)}; platform {devices[0].platform}) over "
      f"{jax.process_count()} process(es)",
      f"mesh      {mesh_str}",
      f"model     {cfg.num_params() / 1e6:,.2f}M parameters ({cfg.num_params(False) / 1e6:,.2f}M "
      f"without embeddings); d_model {cfg.d_model}, {cfg.n_layers} layers, {cfg.n_heads} heads "
      f"({cfg.n_kv_heads} kv); rope {cfg.rope.rope_type}; {cfg.dtype} compute, "
      f"{cfg.param_dtype} params",
      f"state     {state_bytes / 2**20:,.1f} MiB per device (params + optimizer)",
      f"batch     {c.batch_size} x {c.seq_len} = {tokens:,} tokens/step "
      f"({c.grad_accum} micro-batch(es)); {flops_per_token * tokens / 1e12:,.3f} TFLOP/step",
      f"steps     {c.steps} ({_count(c.steps * tokens)} tokens)",
  ])


def _count(n: float) -> str:
  for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
    if n >= size:
      return f"{n / size:,.2f}{unit}"
  return f"{n:,.0f}"


def _init_params(tc, shardings):
  """Parameters from `init_from`: a converted checkpoint or the latest state of a training run."""
  from llama_jax.checkpoints import converted
  from llama_jax.training import run_reader
  path = os.path.expanduser(tc.config.init_from)
  if config_lib.init_from_kind(path) == "converted":
    return converted.load_params(path, tc.model, shardings=shardings.params)
  # The shapes were checked against this model by `validation.validate`.
  try:
    params, step = run_reader.latest_params(path, shardings.params, tc.spec)
  except ValueError as e:
    raise config_lib.ConfigError(f"init_from={tc.config.init_from!r}: {e}") from None
  log.info("init_from: parameters of %s at step %d", path, step)
  return params


def _sample(cfg, params, tok, prompt: str, max_new_tokens: int) -> str:
  """`prompt` and its greedy continuation (stopping at the tokenizer's EOS)."""
  from llama_jax.inference import generate
  from llama_jax.model import spec as spec_lib
  model = spec_lib.from_params(cfg, params)
  prompt_ids = tok.encode(prompt, bos=True, eos=False)
  new = generate.generate(model, [prompt_ids], max_new_tokens, temperature=0.0,
                          eos_id=tok.eos_id)[0]
  # Decoded together: SentencePiece would drop the leading space of a continuation on its own.
  return tok.decode(prompt_ids[1:] + [t for t in new if t != tok.eos_id])


# ------------------------------------------------------------------------------ run
def run(config, workdir: str, devices=None) -> RunResult:
  """Trains (or resumes) `config` in `workdir`. `devices`: a subset to use (default: all)."""
  import jax
  import numpy as np
  from llama_jax import data
  from llama_jax.checkpoints import manager as checkpoint
  from llama_jax.training import preemption
  from llama_jax.training import metrics
  from llama_jax.parallel import mesh as mesh_lib
  from llama_jax.parallel import sharding
  from llama_jax.training import state as state_lib
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.training import step as train_step

  devices = list(devices if devices is not None else jax.devices())
  process, n_proc = jax.process_index(), jax.process_count()
  is_main = process == 0
  say = (lambda text: print(text, flush=True)) if is_main else (lambda text: None)
  tc = config_lib.validate(config, n_devices=len(devices), process_count=n_proc)
  c, cfg, rules, spec = tc.config, tc.model, tc.rules, tc.spec

  # Host-side data first: an empty or unreadable corpus fails before anything is written.
  tok = data.load_or_train_tokenizer(c.data, vocab_size=cfg.vocab_size)
  tokenizer_lib.check_vocab(tok, cfg.vocab_size, bos_id=cfg.bos_id, eos_id=cfg.eos_id)
  if tok.vocab_size < cfg.vocab_size:
    log.warning("the tokenizer %s has %d tokens and model.vocab_size=%d: embedding rows %d.. "
                "are never used", tok.path, tok.vocab_size, cfg.vocab_size, tok.vocab_size)
  train_it = data.make_iterator(c.data, tok, split="train", batch_size=c.batch_size,
                                seq_len=c.seq_len, seed=c.seed, process_index=process,
                                process_count=n_proc)
  eval_it = None
  if c.eval_every:
    eval_it = data.make_iterator(c.data, tok, split="eval", batch_size=tc.micro_batch,
                                 seq_len=c.seq_len, seed=c.seed, process_index=process,
                                 process_count=n_proc)
    eval_start = copy.deepcopy(eval_it.get_state())

  mesh = mesh_lib.make_mesh(c.mesh, devices)
  # Outside the mesh context: on CPU this times a matmul on one device.
  peak, peak_source = metrics.peak_flops_per_device(devices[0], cfg.dtype)
  tx, schedule = state_lib.make_optimizer(spec, c.optim, c.steps)
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(spec, tx, c.seed)
    shardings = state_lib.state_shardings(abstract, spec, mesh)

    # The exit stack closes the checkpoint manager on any exit, so a save already started
    # completes instead of being left half-written.
    with contextlib.ExitStack() as stack:
      stack.callback(train_it.close)
      if eval_it is not None:
        stack.callback(eval_it.close)
      mgr = stack.enter_context(
          checkpoint.CheckpointManager(workdir, keep=c.keep_checkpoints, async_save=True))
      restored = mgr.restore(sharding.with_shardings(abstract, shardings))
      if restored is not None:
        state, data_state, start_step = restored
        train_it.set_state(data_state)
        origin = f"resumed from the checkpoint of step {start_step}"
      elif c.init_from:
        state = state_lib.create_state(spec, tx, c.seed, shardings, _init_params(tc, shardings))
        start_step, origin = 0, f"initialised from {c.init_from} (fresh optimizer)"
      else:
        state = state_lib.create_state(spec, tx, c.seed, shardings)
        start_step, origin = 0, f"random init (seed {c.seed})"
      if is_main:
        workdir_lib.write_config(c, workdir)
        workdir_lib.keep_tokenizer(tok.path, workdir)

      flops_per_token = cfg.flops_per_token(c.seq_len)
      state_bytes = max(sharding.bytes_per_device(state).values())
      say(_summary(tc, mesh, len(devices), state_bytes, flops_per_token))
      say(f"start     {origin}; workdir {workdir}")
      say(f"peak      {peak / 1e12:,.3g} TFLOP/s per device ({peak_source})")

      step_fn = train_step.make_train_step(spec, tx, schedule, grad_accum=c.grad_accum,
                                           shardings=shardings)
      eval_fn = train_step.make_eval_step(spec)

      def evaluate(step: int, params) -> None:
        eval_it.set_state(copy.deepcopy(eval_start))  # the same held-out batches every time
        nll, count = 0.0, 0.0
        for _ in range(c.eval_batches):
          try:
            local = next(eval_it)
          except StopIteration:
            break
          s, n = eval_fn(params, sharding.global_batch(local, mesh, rules))
          nll, count = nll + float(s), count + float(n)
        if not count:
          raise data.DataError("the held-out split produced no target tokens; raise "
                               "data.heldout_fraction or set data.eval_split")
        loss = nll / count
        result.evals[step] = {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 700.0)),
                              "eval_tokens": count}
        writer.write(step, result.evals[step])
        say(f"eval      step {step}: held-out loss {loss:.4f}, perplexity "
            f"{result.evals[step]['eval_perplexity']:.3f} ({count:,.0f} tokens)")

      writer = stack.enter_context(
          metrics.MetricsWriter(workdir, enabled=is_main, resume_step=start_step))
      progress = metrics.Progress(c.steps, start_step, enabled=is_main,
                                  tokens_per_step=c.batch_size * c.seq_len,
                                  flops_per_token=flops_per_token, n_devices=len(devices),
                                  peak_flops=peak)
      result = RunResult(start_step, start_step, False, {}, {}, {}, None, None)
      pending: list[tuple[int, dict]] = []  # per-step metrics not yet fetched from the device
      step = start_step
      guard = stack.enter_context(preemption.PreemptionGuard())
      while step < c.steps:
        local = next(train_it)
        result.data_crc32[step + 1] = zlib.crc32(np.ascontiguousarray(local["tokens"]).tobytes())
        state, step_metrics = step_fn(state, sharding.global_batch(local, mesh, rules))
        step += 1
        pending.append((step, step_metrics))

        if step % c.log_every == 0 or step == c.steps:
          fetched = [(s, jax.device_get(m)) for s, m in pending]
          pending.clear()
          result.losses.update((s, float(m["loss"])) for s, m in fetched)
          last = fetched[-1][1]
          mean_loss = float(np.mean([m["loss"] for _, m in fetched]))
          rates = progress.update(step, loss=mean_loss, lr=float(last["learning_rate"]),
                                  grad_norm=float(last["grad_norm"]))
          writer.write(step, {
              "loss": mean_loss, "step_loss": last["loss"], "grad_norm": last["grad_norm"],
              "learning_rate": last["learning_rate"],
              "target_tokens": float(sum(m["tokens"] for _, m in fetched)),
              "data_crc32": f"{result.data_crc32[step]:08x}", **rates})
          if not math.isfinite(mean_loss):
            raise FloatingPointError(
                f"the training loss is {mean_loss} at step {step}; lower optim.peak_lr or "
                "raise optim.warmup_steps (the checkpoints in the workdir are intact)")
        if eval_it is not None and step % c.eval_every == 0:
          evaluate(step, state.params)
        if c.checkpoint_every and step % c.checkpoint_every == 0:
          mgr.save(step, state, train_it.get_state())
        # With several processes the stop flag is agreed through a collective, which waits for
        # the devices; polling it only at log steps keeps the host running ahead of them.
        if (n_proc == 1 or step % c.log_every == 0) and guard.should_stop:
          result.stopped_early = True
          break

      if mgr.latest_step() != step:
        mgr.save(step, state, train_it.get_state(), force=True)
      mgr.wait()
      say(f"saved     checkpoint of step {step} in {mgr.directory}")
      if result.stopped_early:
        say(f"stopped   by a signal at step {step}; rerun the same command to resume")
      else:
        if eval_it is not None and step not in result.evals and step > start_step:
          evaluate(step, state.params)
        if c.sample_tokens and c.sample_prompt:
          result.sample = _sample(cfg, state.params, tok, c.sample_prompt, c.sample_tokens)
          say(f"sample    (greedy, {c.sample_tokens} tokens at most):\n{result.sample}")
      progress.close()
  result.final_step, result.state = step, state
  return result
