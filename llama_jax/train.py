"""The trainer: `python -m llama_jax.train --config=configs/<recipe>.py [--workdir=...]`.

Read top to bottom, `run` is the whole story:

  validate the config (no device work yet) → tokenizer and data iterators (a bad corpus fails
  here, before anything is written) → mesh → abstract state → restore the latest checkpoint in
  the workdir, else `init_from` weights with a fresh optimizer, else a random init (all created
  directly sharded) → steps, with periodic logs (console, metrics.jsonl, TensorBoard), held-out
  evaluation and checkpoints (state + data iterator position) → a final checkpoint, evaluation
  and a greedy sample of `sample_prompt`.

SIGTERM/SIGINT stop the loop after the current step; the state is saved and the process exits
cleanly, and rerunning the same command resumes exactly where it stopped (same data order, same
numbers). Every process runs the same program (SPMD); only process 0 prints and writes logs.

Multi-host: `jax.distributed.initialize()` runs before any JAX computation when this is one of
several processes: with `--coordinator_address --num_processes --process_id` when given,
otherwise with JAX's own detection on TPU VMs and in multi-task SLURM / Open MPI jobs. Each
process loads batch_size / process_count rows; `sharding.global_batch` assembles the global
batch. See configs/launch/README.md.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
import logging
import math
import os
import sys
import zlib
from pathlib import Path
from typing import Any

from absl import app, flags
from ml_collections import config_flags

# Only the configuration, flags and distributed set-up may run before jax.distributed is up;
# everything that touches devices is imported lazily inside `run`.
from llama_jax import config as config_lib

log = logging.getLogger("llama_jax.train")

_DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")
FLAGS = flags.FLAGS


def define_flags() -> None:
  """The CLI's flags, defined only when run as a program: modules that import this one (tests,
  other tools with their own --config) keep a clean global flag namespace."""
  config_flags.DEFINE_config_file(
      "config", _DEFAULT_CONFIG, "Training recipe (a configs/*.py file); override fields with "
      "--config.<field>=<value>, e.g. --config.optim.peak_lr=2e-5.", lock_config=True)
  flags.DEFINE_string(
      "workdir", None, "Checkpoints, logs and config.json go here; rerunning with the same "
      "workdir resumes. Default: runs/<config file name>.")
  flags.DEFINE_string(
      "coordinator_address", None, "host:port of process 0 for multi-process runs.")
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index in [0, num).")
  flags.DEFINE_list(
      "local_device_ids", None, "Accelerators this process drives, e.g. 0,1,2,3,4,5,6,7 for one "
      "process per 8-GPU node under SLURM (JAX's SLURM default is one GPU per process: the "
      "GPU numbered SLURM_LOCALID).")
  flags.DEFINE_enum(
      "distributed", "auto", ["auto", "on", "off"],
      "auto: initialize jax.distributed when the flags above are given, on TPU VMs, or in a "
      "multi-task SLURM/Open MPI job; on: always (JAX detects the cluster); off: never.")


# ------------------------------------------------------------------------------ multi-host
def _in_cluster() -> bool:
  env = os.environ
  if int(env.get("SLURM_NTASKS", env.get("SLURM_STEP_NUM_TASKS", "1")) or 1) > 1:
    return True
  if int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return True
  return importlib.util.find_spec("libtpu") is not None  # a TPU VM (one host or a pod)


def initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                           num_processes: int | None = None, process_id: int | None = None,
                           local_device_ids=None) -> bool:
  """Starts jax.distributed when this is (possibly) one of several processes; True if started."""
  import jax
  explicit = (coordinator_address, num_processes, process_id)
  if any(v is not None for v in explicit):
    if any(v is None for v in explicit):
      raise app.UsageError("--coordinator_address, --num_processes and --process_id go "
                           "together: give all three or none")
    if not 0 <= process_id < num_processes:
      raise app.UsageError(f"--process_id={process_id} must be in [0, --num_processes="
                           f"{num_processes})")
  if mode == "off" or (mode == "auto" and all(v is None for v in explicit) and
                       not _in_cluster()):
    return False
  if jax.config.jax_platforms in (None, "", "cpu") or "cpu" in str(jax.config.jax_platforms):
    # CPU devices need a collectives backend to talk across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if local_device_ids is not None:
    local_device_ids = [int(i) for i in local_device_ids]
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id,
                             local_device_ids=local_device_ids)
  return True


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
  from llama_jax import checkpoint_io, workdir as workdir_lib
  path = os.path.expanduser(tc.config.init_from)
  if config_lib.init_from_kind(path) == "converted":
    return checkpoint_io.load_params(path, tc.model, shardings=shardings.params)
  # The shapes were checked against this model by `config.validate`.
  try:
    params, step = workdir_lib.latest_params(path, shardings.params, tc.model, tc.rules)
  except ValueError as e:
    raise config_lib.ConfigError(f"init_from={tc.config.init_from!r}: {e}") from None
  log.info("init_from: parameters of %s at step %d", path, step)
  return params


def _keep_tokenizer(tok, workdir: str) -> None:
  """A copy of the tokenizer in the workdir, so generation and evaluation find it there."""
  import shutil
  from llama_jax import workdir as workdir_lib
  dst = os.path.join(workdir, workdir_lib.TOKENIZER_FILE)
  if not os.path.exists(dst) and os.path.isfile(os.path.expanduser(tok.path)):
    shutil.copyfile(os.path.expanduser(tok.path), dst + ".tmp")
    os.replace(dst + ".tmp", dst)


def _sample(cfg, params, tok, prompt: str, max_new_tokens: int) -> str:
  """`prompt` and its greedy continuation (stopping at the tokenizer's EOS)."""
  from llama_jax import generate
  from llama_jax import model as model_lib
  model = model_lib.from_params(cfg, params)
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
  from llama_jax import checkpoint, data, metrics, sharding
  from llama_jax import tokenizer as tokenizer_lib
  from llama_jax import train_step

  devices = list(devices if devices is not None else jax.devices())
  process, n_proc = jax.process_index(), jax.process_count()
  is_main = process == 0
  say = (lambda text: print(text, flush=True)) if is_main else (lambda text: None)
  tc = config_lib.validate(config, n_devices=len(devices), process_count=n_proc)
  c, cfg, rules = tc.config, tc.model, tc.rules

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

  mesh = sharding.make_mesh(c.mesh, devices)
  # Outside the mesh context: on CPU this times a matmul on one device.
  peak, peak_source = metrics.peak_flops_per_device(devices[0], cfg.dtype)
  tx, schedule = train_step.make_optimizer(cfg, c.optim, c.steps)
  with jax.set_mesh(mesh):
    abstract = train_step.abstract_state(cfg, tx, c.seed)
    shardings = train_step.state_shardings(abstract, cfg, mesh, rules)

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
        state = train_step.create_state(cfg, tx, c.seed, shardings, _init_params(tc, shardings))
        start_step, origin = 0, f"initialised from {c.init_from} (fresh optimizer)"
      else:
        state = train_step.create_state(cfg, tx, c.seed, shardings)
        start_step, origin = 0, f"random init (seed {c.seed})"
      if is_main:
        config_lib.write(c, workdir)
        _keep_tokenizer(tok, workdir)

      flops_per_token = cfg.flops_per_token(c.seq_len)
      state_bytes = max(sharding.bytes_per_device(state).values())
      say(_summary(tc, mesh, len(devices), state_bytes, flops_per_token))
      say(f"start     {origin}; workdir {workdir}")
      say(f"peak      {peak / 1e12:,.3g} TFLOP/s per device ({peak_source})")

      step_fn = train_step.make_train_step(cfg, tx, schedule, c.grad_accum, rules, shardings,
                                           trainable=c.optim.trainable)
      eval_fn = train_step.make_eval_step(cfg, rules)

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
      guard = stack.enter_context(checkpoint.PreemptionGuard())
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


# ------------------------------------------------------------------------------ CLI
def default_workdir(config_path: str) -> str:
  """runs/<config file stem>, e.g. runs/tiny for configs/tiny.py."""
  return os.path.join("runs", Path(config_path.split(":")[0]).stem or "run")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value")
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "jax", "orbax", "tensorboardX"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  config = FLAGS.config
  workdir = FLAGS.workdir or default_workdir(config_flags.get_config_filename(FLAGS["config"]))
  try:
    # Everything that needs no device is checked before jax.distributed connects to anyone.
    config_lib.validate(config)
    initialize_distributed(FLAGS.distributed, FLAGS.coordinator_address, FLAGS.num_processes,
                           FLAGS.process_id, FLAGS.local_device_ids)
    run(config, workdir)
  except _user_errors() as e:
    # A mistake in the config or the inputs: the message says what to change; no traceback.
    sys.exit(f"error: {type(e).__name__}: {e}")


def _user_errors() -> tuple[type[Exception], ...]:
  from llama_jax import checkpoint, checkpoint_io, data
  return (config_lib.ConfigError, data.DataError, checkpoint.CheckpointError,
          checkpoint_io.CheckpointError)


def parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a one-line error for a `--config.x.y=v` override naming no config key.

  config_flags applies overrides while parsing, so a misspelt key surfaces here as the
  config's AttributeError/KeyError (with a "did you mean"), before `main` could catch it.
  """
  try:
    return FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"error: {e}. Pass --helpfull to list the flags.")
  except (AttributeError, KeyError) as e:
    detail = e
    while isinstance(detail, (AttributeError, KeyError)) and detail.args and isinstance(
        detail.args[0], BaseException):
      detail = detail.args[0]
    text = " ".join(str(detail.args[0] if detail.args else detail).split())
    overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"error: ConfigError: an override names no config key ({text.strip()}); "
             f"overrides given: {overrides}. Every key and its default is in configs/base.py.")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=parse_flags)
