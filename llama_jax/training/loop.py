"""The training loop: `run(config, workdir)`, read top to bottom.

  validate the config (no device work yet) → tokenizer and data iterators (a bad corpus fails
  here, before anything is written) → mesh → abstract state → restore the latest checkpoint in
  the workdir, else `init_from` weights with a fresh optimizer, else a random init (all created
  directly sharded) → steps, with periodic logs (console, metrics.jsonl, TensorBoard), held-out
  evaluation and checkpoints (state + data iterator position) → a final checkpoint, evaluation
  and a greedy sample of `sample_prompt`.

SIGTERM/SIGINT stop the loop after the current step (the next one with several processes: the
flags are agreed inside the train step, see `preemption.py`); the state is saved, `run`
returns with `stopped_early` (the CLI then exits with status 75), and rerunning the same
command resumes exactly where it stopped (same data order, same numbers). Rerunning a run
that is already complete trains and saves nothing.
Every process runs the same program (SPMD); only process 0 prints and writes logs.
Each process loads batch_size / process_count rows; `sharding.global_batch` assembles the global
batch.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import zlib
from collections.abc import Sequence
from typing import Any

from llama_jax.training import validation as config_lib
from llama_jax.training import workdir as workdir_lib
from llama_jax.training.hooks import Periodic, run_due, run_final

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
  evals: dict[int, dict[str, float]]  # step → {"<eval name>_<metric>": value}, e.g. eval_loss
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
      *([f"adapter   {tc.spec.adapter.name}: {tc.spec.num_params(True) / 1e6:,.3f}M trainable "
         f"parameters of {tc.spec.num_params() / 1e6:,.2f}M (checkpoints hold those alone)"]
        if tc.spec.adapter is not None else []),
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
  """Parameters from `init_from`: a converted checkpoint or the latest state of a training run.

  With an adapter: that base, the adapter installed on it with its initial values.
  """
  import jax

  from llama_jax.checkpoints import converted
  from llama_jax.training import run_reader
  spec = tc.spec
  if spec.adapter is not None:
    base = run_reader.base_params(tc.config, spec, shardings.params)
    return jax.jit(lambda b: spec.init_params(tc.config.seed, b),
                   out_shardings=shardings.params, donate_argnums=0)(base)
  path = os.path.expanduser(tc.config.init_from)
  if config_lib.init_from_kind(path) == "converted":
    return converted.load_params(path, tc.model, shardings=shardings.params,
                                 expected=tc.spec.abstract_params)
  # The shapes were checked against this model by `validation.validate`.
  try:
    params, step = run_reader.latest_params(path, shardings.params, tc.spec)
  except ValueError as e:
    raise config_lib.ConfigError(f"init_from={tc.config.init_from!r}: {e}") from None
  log.info("init_from: parameters of %s at step %d", path, step)
  return params


def _sample(spec, params, tok, prompt: str, max_new_tokens: int) -> str:
  """`prompt` and its greedy continuation (stopping at the tokenizer's EOS)."""
  from llama_jax.inference import generate
  model = spec.merge(params, rules=None)  # one prompt: no activation sharding constraints
  prompt_ids = tok.encode(prompt, bos=True, eos=False)
  new = generate.generate(model, [prompt_ids], max_new_tokens, temperature=0.0,
                          eos_id=tok.eos_id)[0]
  # Decoded together: SentencePiece would drop the leading space of a continuation on its own.
  return tok.decode(prompt_ids[1:] + [t for t in new if t != tok.eos_id])


def _evaluations(c, tok, micro_batch: int, place, say):
  """{name: (every, Evaluation)} for the enabled entries of `config.evals`."""
  import jax

  from llama_jax import evals
  context = evals.registry.Context(
      tokenizer=tok, data=c.data, seq_len=c.seq_len, batch_size=micro_batch, seed=c.seed,
      place=place, process_index=jax.process_index(), process_count=jax.process_count(),
      log=lambda text: None)
  out = {}
  for name, entry in c.evals.items():
    options = dict(entry)
    kind, every = options.pop("type"), options.pop("every")
    if every:
      out[name] = (every, evals.get(kind)(options, context))
  return out


# ------------------------------------------------------------------------------ run
def run(config, workdir: str, devices=None, hooks: Sequence[Periodic] = ()) -> RunResult:
  """Trains (or resumes) `config` in `workdir`. `devices`: a subset to use (default: all);
  `hooks`: further periodic actions, run after the built-in ones (see `hooks.py`)."""
  import jax
  import numpy as np

  from llama_jax import data
  from llama_jax.checkpoints import manager as checkpoint
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.parallel import mesh as mesh_lib
  from llama_jax.parallel import sharding
  from llama_jax.training import augment, metrics, preemption
  from llama_jax.training import state as state_lib
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
  mesh = mesh_lib.make_mesh(c.mesh, devices)
  place = lambda local: sharding.global_batch(local, mesh, rules)
  evaluations = _evaluations(c, tok, tc.micro_batch, place, say)

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
      for _, evaluation in evaluations.values():
        stack.callback(evaluation.close)
      mgr = stack.enter_context(
          checkpoint.CheckpointManager(workdir, keep=c.keep_checkpoints, async_save=True))
      # An adapter run's checkpoints hold the adapter; its base comes back from its source.
      restored = mgr.restore(state_lib.saved_state(
          sharding.with_shardings(abstract, shardings), spec))
      if restored is not None:
        state, data_state, start_step = restored
        if spec.saved is not None:
          from llama_jax.training import run_reader
          state = state_lib.with_base(state, run_reader.base_params(c, spec, shardings.params))
        train_it.set_state(data_state)
        origin = f"resumed from the checkpoint of step {start_step}"
      elif c.init_from or spec.adapter is not None:
        state = state_lib.create_state(spec, tx, c.seed, shardings, _init_params(tc, shardings))
        base = c.init_from or f"the random init of seed {c.seed}"
        origin = (f"adapter {spec.adapter.name!r} on {base}" if spec.adapter is not None
                  else f"initialised from {c.init_from} (fresh optimizer)")
        start_step = 0
      else:
        state = state_lib.create_state(spec, tx, c.seed, shardings)
        start_step, origin = 0, f"random init (seed {c.seed})"
      if start_step >= c.steps:
        # The run that reached this step trained, evaluated, saved and sampled it all: nothing
        # is done or written now (not even config.json or a new TensorBoard file).
        say(f"done      the run was already complete at step {start_step} of {c.steps}; "
            "nothing was trained or saved (raise --config.steps to continue it)")
        return RunResult(start_step, start_step, False, {}, {}, {}, None, state)
      if is_main:
        workdir_lib.write_config(c, workdir)
        workdir_lib.keep_tokenizer(tok.path, workdir)

      flops_per_token = cfg.flops_per_token(c.seq_len)
      state_bytes = max(sharding.bytes_per_device(state).values())
      say(_summary(tc, mesh, len(devices), state_bytes, flops_per_token))
      say(f"start     {origin}; workdir {workdir}")
      say(f"peak      {peak / 1e12:,.3g} TFLOP/s per device ({peak_source})")

      step_fn = train_step.make_train_step(
          spec, tx, schedule, grad_accum=c.grad_accum, shardings=shardings,
          transform=augment.transform_for(c.augment, cfg, c.seq_len))
      writer = stack.enter_context(
          metrics.MetricsWriter(workdir, enabled=is_main, resume_step=start_step))
      progress = metrics.Progress(c.steps, start_step, enabled=is_main,
                                  tokens_per_step=c.batch_size * c.seq_len,
                                  flops_per_token=flops_per_token, n_devices=len(devices),
                                  peak_flops=peak)
      result = RunResult(start_step, start_step, False, {}, {}, {}, None, None)
      pending: list[tuple[int, dict]] = []  # per-step metrics not yet fetched from the device

      # ---------------------------------------------------------------- periodic actions
      def log_metrics(step: int, state) -> None:
        if not pending:
          return
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
            "data_crc32": f"{result.data_crc32[step]:08x}", **rates,
            # A batch augmentation's draws at the logged step (e.g. augment_e2llm_g).
            **{k: float(v) for k, v in last.items() if k.startswith("augment_")}})
        if not math.isfinite(mean_loss):
          raise FloatingPointError(
              f"the training loss is {mean_loss} at step {step}; lower optim.peak_lr or "
              "raise optim.warmup_steps (the checkpoints in the workdir are intact)")

      def evaluate(name: str, evaluation):
        def action(step: int, state) -> None:
          if step <= start_step:  # a resumed run that had already finished: evaluated then
            return
          model = spec.merge(state.params, rules=spec.rules if evaluation.sharded else None)
          scores = evaluation.run(model).metrics
          scores = {f"{name}_{k}": v for k, v in scores.items()}
          result.evals.setdefault(step, {}).update(scores)
          writer.write(step, scores)
          say(f"eval      step {step}: " + _describe(name, scores))
        return action

      def save_checkpoint(step: int, state) -> None:
        mgr.save(step, state_lib.saved_state(state, spec), train_it.get_state())

      def sample(step: int, state) -> None:
        if c.sample_tokens and c.sample_prompt:
          result.sample = _sample(spec, state.params, tok, c.sample_prompt, c.sample_tokens)
          say(f"sample    (greedy, {c.sample_tokens} tokens at most):\n{result.sample}")

      schedule_ = [Periodic("log", c.log_every, log_metrics, on_stop=True)]
      schedule_ += [Periodic(f"eval:{name}", every, evaluate(name, ev))
                    for name, (every, ev) in evaluations.items()]
      schedule_ += [Periodic("checkpoint", c.checkpoint_every, save_checkpoint, on_stop=True),
                    *hooks, Periodic("sample", 0, sample)]

      # ---------------------------------------------------------------- the loop
      step = start_step
      guard = stack.enter_context(preemption.PreemptionGuard())
      while step < c.steps:
        local = next(train_it)
        result.data_crc32[step + 1] = zlib.crc32(np.ascontiguousarray(local["tokens"]).tobytes())
        # Every process's stop flag rides in its rows; the step agrees on them (preemption.py).
        local[preemption.STOP_KEY] = guard.batch_flags(len(local["tokens"]))
        state, step_metrics = step_fn(state, place(local))
        step += 1
        pending.append((step, step_metrics))
        run_due(schedule_, step, state)
        if guard.stop_now(step_metrics["stop"]):
          result.stopped_early = True
          break

      run_final(schedule_, step, state, stopped=result.stopped_early, ran_this_step=True)
      mgr.wait()
      say(f"saved     checkpoint of step {step} in {mgr.directory}")
      if result.stopped_early:
        say(f"stopped   by a signal at step {step}; checkpoint saved, rerun the same command "
            "to resume (exit status 75)")
      progress.close()
  result.final_step, result.state = step, state
  return result


def _describe(name: str, scores: dict) -> str:
  if name == "eval" and "eval_loss" in scores:  # the held-out loss, as it always read
    return (f"held-out loss {scores['eval_loss']:.4f}, perplexity "
            f"{scores['eval_perplexity']:.3f} ({scores['eval_tokens']:,.0f} tokens)")
  return ", ".join(f"{k} {v:.4g}" for k, v in scores.items())
