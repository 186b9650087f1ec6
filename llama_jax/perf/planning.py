"""Will a recipe fit? Compile its train step for N simulated devices and report per-device memory.

  python -m llama_jax.plan --config=configs/yarn_13b.py --devices=64 \
      [--config.mesh.fsdp=64 --config.grad_accum=1] [--hbm_gib=80] [--peak_tflops=989 --mfu=0.4]

The trainer's own step (`training.step.make_train_step`) is lowered for abstract inputs that carry
the recipe's shardings on a mesh of `--devices` CPU devices (simulated in this process; nothing
is allocated: every input is a ShapeDtypeStruct) and compiled ahead of time. Reported per device:

- parameters and optimizer state, from the shardings (exact: bytes of each leaf's shard);
- XLA's buffer assignment from `compiled.memory_analysis()`: arguments (state + batch),
  outputs, donated aliases, temporaries (activations, gradients, workspace) and the resulting
  peak = arguments + outputs - aliases + temporaries;
- FLOPs per step: `cost_analysis()` of the partitioned program next to the model formula
  (`ModelConfig.flops_per_token`, causal convention, training = 3x forward) — XLA counts a
  loop body once, so with scanned layers, chunked attention or gradient accumulation its count
  is a lower bound and the formula is the number to use;
- with --hbm_gib, whether the peak fits; with --peak_tflops and --mfu, the implied step time.

With an adapter (`config.adapter`) the parameters are the frozen base plus the adapter, the
optimizer state covers the adapter only, and the model formula counts 2x forward per step (no
weight gradients for the frozen base; the adapter's own FLOPs are left out).

The CPU compiler stands in for the target's: sharding, the per-device shapes, parameters,
optimizer state and activation sets are the target's, but fusion and buffer reuse differ by
backend (the CPU backend may also keep some bfloat16 temporaries in float32), so treat the
temporaries as an estimate with a margin of tens of percent, not an exact figure.
"""
from __future__ import annotations

import math
import time

from llama_jax.core.errors import ConfigError, UsageError

GIB = 2 ** 30


def _size(n: float) -> str:
  for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
    if abs(n) >= scale:
      return f"{n / scale:,.2f} {unit}"
  return f"{n:.0f} B"


def _count(n: float) -> str:
  return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _shard_bytes(abstract_tree, shardings) -> int:
  import jax
  import numpy as np
  total = 0
  for leaf, sharding in zip(jax.tree.leaves(abstract_tree), jax.tree.leaves(shardings)):
    shape = sharding.shard_shape(leaf.shape) if leaf.shape else ()
    total += math.prod(shape) * np.dtype(leaf.dtype).itemsize
  return total


def _total_bytes(abstract_tree) -> int:
  import jax
  import numpy as np
  return sum(math.prod(x.shape) * np.dtype(x.dtype).itemsize
             for x in jax.tree.leaves(abstract_tree))


def _micro_batch_fits(config, n_devices: int, grad_accum: int) -> bool:
  from llama_jax.model.config import ModelConfig
  from llama_jax.parallel import mesh as mesh_lib
  from llama_jax.training import workdir as workdir_lib
  batch = int(config.batch_size)
  if batch % grad_accum:
    return False
  try:
    model = ModelConfig.from_dict(workdir_lib.model_dict(config))
    mesh_lib.validate_mesh(config.mesh, n_devices, model, batch, int(config.seq_len),
                           rules=tuple((str(k), v if v is None or isinstance(v, str)
                                        else tuple(v)) for k, v in config.sharding.rules),
                           grad_accum=grad_accum)
  except (ValueError, TypeError):
    return False
  return True


def fit_grad_accum(config, n_devices: int) -> str | None:
  """Makes the recipe's micro-batch fit a mesh it was not sized for; returns what changed.

  A recipe's `grad_accum` is chosen for its own device count: yarn_7b.py runs 64 sequences as
  8 micro-batches of 8 on 8 GPUs, and 8 sequences cannot be split over fsdp=64. When the mesh
  does not divide `batch_size / grad_accum`, the nearest `grad_accum` whose micro-batch it does
  divide is set on `config` (the same global batch, so the same training) and a note says so;
  when none fits, or the recipe's fits, nothing changes (None) and validation reports any
  remaining problem with the values that would work.
  """
  requested, batch = int(config.grad_accum), int(config.batch_size)
  if requested < 1 or _micro_batch_fits(config, n_devices, requested):
    return None
  fitting = [a for a in range(1, batch + 1) if _micro_batch_fits(config, n_devices, a)]
  if not fitting:
    return None
  chosen = min(fitting, key=lambda a: (abs(a - requested), -a))
  config.grad_accum = chosen
  return (f"grad_accum {requested} -> {chosen}: the recipe's micro-batch of {batch // requested} "
          f"sequences cannot be split over this mesh, {batch // chosen} can (same global batch "
          f"of {batch}); grad_accum values that fit: {fitting}. Pass --config.grad_accum=N to "
          "choose")


def plan(config, n_devices: int, hbm_gib: float = 0.0, peak_tflops: float = 0.0,
         mfu: float = 0.4) -> dict:
  """Compiles the recipe's train step for `n_devices` and returns the report as a dict."""
  import jax

  from llama_jax.core import compilation as compile_options
  from llama_jax.parallel import mesh as mesh_lib
  from llama_jax.parallel import sharding as sharding_lib
  from llama_jax.perf import jax_step as bench_jax
  from llama_jax.training import state as state_lib
  from llama_jax.training import step as step_lib
  from llama_jax.training import validation as config_lib

  devices = jax.devices()
  if len(devices) < n_devices:
    raise UsageError(
        f"--devices={n_devices} but JAX has {len(devices)} {devices[0].platform} devices; run "
        "`python -m llama_jax.plan` as its own process (it sets the simulated device count "
        "before JAX starts), or set jax_num_cpu_devices / XLA_FLAGS="
        f"--xla_force_host_platform_device_count={n_devices} before importing JAX")
  checked = config_lib.validate(config, n_devices=n_devices, check_paths=False)
  model_cfg, rules, spec = checked.model, checked.rules, checked.spec
  batch, seq_len, accum = int(config.batch_size), int(config.seq_len), int(config.grad_accum)
  mesh = mesh_lib.make_mesh(config.mesh, devices=devices[:n_devices])

  tx, schedule = state_lib.make_optimizer(spec, config.optim, int(config.steps))
  abstract = state_lib.abstract_state(spec, tx, int(config.seed))
  shardings = state_lib.state_shardings(abstract, spec, mesh)
  # The accelerator's compilation (XLA defaults, one logits matmul), not the CPU stand-in's.
  step = step_lib.make_train_step(spec, tx, schedule, grad_accum=accum, shardings=shardings,
                                  compilation=compile_options.DEFAULT)
  state_in = sharding_lib.with_shardings(abstract, shardings)
  batch_in = bench_jax.abstract_batch(batch, seq_len, sharding_lib.batch_sharding(mesh, rules))
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.lower(state_in, batch_in).compile()
  compile_seconds = time.perf_counter() - start

  memory = bench_jax.memory_from_analysis(compiled.memory_analysis())
  xla_flops = bench_jax.flops_from_cost_analysis(compiled)
  tokens = batch * seq_len
  per_token = (model_cfg.flops_per_token(seq_len) if spec.adapter is None
               else 2 * model_cfg.flops_per_token(seq_len, training=False))
  model_flops = per_token * tokens
  report = {
      "devices": n_devices,
      "mesh": dict(mesh.shape),
      "model": {"params": model_cfg.num_params(), "dtype": model_cfg.dtype,
                "param_dtype": model_cfg.param_dtype, "attention": model_cfg.attention,
                "remat": model_cfg.remat, "scan_layers": model_cfg.scan_layers},
      "batch": {"sequences": batch, "seq_len": seq_len, "grad_accum": accum,
                "tokens_per_step": tokens,
                "sequences_per_device_per_microbatch": batch / accum / max(
                    1, mesh.shape["data"] * mesh.shape["fsdp"]),
                # The sequence axis splits each sequence's tokens across its devices.
                "tokens_per_device_per_microbatch": tokens / accum / max(
                    1, mesh.shape["data"] * mesh.shape["fsdp"] * mesh.shape["sequence"])},
      "per_device_bytes": {
          "params": _shard_bytes(abstract.params, shardings.params),
          "optimizer_state": _shard_bytes(abstract.opt_state, shardings.opt_state),
          **dict(memory.items())},
      "total_bytes": {"params": _total_bytes(abstract.params),
                      "optimizer_state": _total_bytes(abstract.opt_state)},
      "flops_per_step": {"model_formula_total": model_flops,
                         "model_formula_per_device": model_flops / n_devices,
                         "xla_cost_analysis_per_device": xla_flops},
      "compile_seconds": compile_seconds,
  }
  if spec.adapter is not None:
    report["adapter"] = {"name": spec.adapter.name, "options": spec.adapter.options(),
                         "trainable_params": spec.num_params(True)}
  if hbm_gib > 0:
    peak = memory.get("peak_bytes", 0)
    report["fits"] = {"hbm_gib": hbm_gib, "peak_gib": peak / GIB,
                      "fits": bool(peak <= hbm_gib * GIB),
                      "headroom_gib": hbm_gib - peak / GIB}
  if peak_tflops > 0:
    if not 0 < mfu <= 1:
      raise ConfigError(f"--mfu={mfu} must be in (0, 1]")
    seconds = model_flops / n_devices / (peak_tflops * 1e12 * mfu)
    report["time_estimate"] = {"peak_tflops": peak_tflops, "mfu": mfu, "step_seconds": seconds,
                               "run_hours": seconds * int(config.steps) / 3600,
                               "steps": int(config.steps)}
  return report


def format_report(name: str, r: dict) -> str:
  b, m, f = r["per_device_bytes"], r["model"], r["flops_per_step"]
  mesh = " x ".join(f"{k}={v}" for k, v in r["mesh"].items() if v > 1) or "1 device"
  lines = [
      f"plan: {name} on {r['devices']} devices ({mesh})",
      f"  model     {_count(m['params'])} params ({m['param_dtype']} params, {m['dtype']} "
      f"compute), attention={m['attention']}, remat={m['remat']}, scan_layers={m['scan_layers']}",
      *([f"  adapter   {r['adapter']['name']} {r['adapter']['options']}: "
         f"{_count(r['adapter']['trainable_params'])} trainable parameters"]
        if "adapter" in r else []),
      f"  batch     {r['batch']['sequences']} x {r['batch']['seq_len']} tokens, grad_accum "
      f"{r['batch']['grad_accum']} ({r['batch']['sequences_per_device_per_microbatch']:g} "
      f"sequences, {r['batch']['tokens_per_device_per_microbatch']:,.0f} tokens per device per "
      "micro-batch)",
      *([f"  note      {r['note']}"] if r.get("note") else []),
      "  per device:",
      f"    parameters            {_size(b['params']):>12}   (all devices "
      f"{_size(r['total_bytes']['params'])})",
      f"    optimizer state       {_size(b['optimizer_state']):>12}   (all devices "
      f"{_size(r['total_bytes']['optimizer_state'])})",
      f"    arguments             {_size(b.get('argument_bytes', 0)):>12}   (state + batch)",
      f"    outputs               {_size(b.get('output_bytes', 0)):>12}   (of which donated "
      f"into arguments: {_size(b.get('alias_bytes', 0))})",
      f"    temporaries           {_size(b.get('temp_bytes', 0)):>12}   (activations, "
      "gradients, workspace)",
      f"    peak                  {_size(b.get('peak_bytes', 0)):>12}   (arguments + outputs - "
      "donated + temporaries)",
      f"  FLOPs per step: model formula {f['model_formula_total']:.3e} total, "
      f"{f['model_formula_per_device']:.3e} per device; XLA cost analysis "
      + (f"{f['xla_cost_analysis_per_device']:.3e}" if f["xla_cost_analysis_per_device"]
         else "n/a") + " per device (loop bodies counted once)",
      f"  compiled in {r['compile_seconds']:.1f} s",
  ]
  if "fits" in r:
    fit = r["fits"]
    lines.append(f"  fits in {fit['hbm_gib']:g} GiB: {'YES' if fit['fits'] else 'NO'} "
                 f"(peak {fit['peak_gib']:.2f} GiB, headroom {fit['headroom_gib']:.2f} GiB)")
  if "time_estimate" in r:
    t = r["time_estimate"]
    lines.append(f"  at {t['peak_tflops']:g} TFLOP/s x MFU {t['mfu']:g}: {t['step_seconds']:.1f} "
                 f"s/step, {t['run_hours']:.1f} h for {t['steps']} steps")
  return "\n".join(lines)
