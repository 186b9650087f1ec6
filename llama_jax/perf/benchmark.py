"""Train-step speed, MFU and memory over sequence lengths, against HF transformers + torch.

The benchmark behind `python -m llama_jax.bench`:

  python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench \
      [--seq_lens=256,512,1024,2048] [--impls=xla,xla_blocked,chunked,hf_torch] \
      [--batch_mode=tokens]

For each sequence length and implementation it records: step time (median of `--steps` timed
steps after `--warmup`), tokens/s, model TFLOP/s (`ModelConfig.flops_per_token`, causal
convention, training = 3x forward), MFU against the measured matmul peak of the device and
against its datasheet peak, compile time, and peak memory (XLA's compiled memory plan; the
allocator peak on GPU; for HF the torch process's peak RSS). JAX implementations are the
model's attention kernels (`xla`, `chunked`, `cudnn`, `splash`) inside the trainer's own step;
`hf_torch` is `LlamaForCausalLM` (sdpa attention) + `torch.optim.AdamW` with the same config,
float32, torch threads = cores, run in a child process whose steps interleave with the JAX ones
so that drifting machine load affects every implementation alike.

`--batch_mode=tokens` (default) keeps tokens per step = batch_size x seq_len of the config (the
batch shrinks as sequences grow, never below 1); `fixed` keeps batch_size rows at every length.
`--time=false` only compiles: memory and compile time at lengths too long to run here.

With `config.adapter` set (e.g. `configs/bench_34m_lora.py`) both sides train the adapter only:
the JAX step with the frozen base, `hf_torch` as HF peft's `get_peft_model` with the same
options (LoRA, rsLoRA, DoRA, prefix tuning). Model FLOPs then count 2x forward (no weight
gradients for the frozen base; the adapter's own FLOPs are left out), for MFU.

Writes DIR/bench.json (header + one record per impl and length), DIR/bench.md (a table) and
DIR/bench.png (throughput and memory against sequence length, one line per impl).

CPU runs: `--malloc=auto` restarts the benchmark with tcmalloc preloaded when it is installed
(both runtimes then use it; `llama_jax/malloc.py` says why it matters). The JAX steps compile as
training compiles them (`--step_compile=backend`: on CPU without YNNPACK fusions and with the
logits in vocabulary pieces, `llama_jax/compile_options.py`); `--step_compile=xla_defaults`
compiles them with XLA's defaults instead, for an A/B of that choice. `--xla_cpu_flags`
appends further XLA flags.
"""
from __future__ import annotations

import os
from pathlib import Path

from absl import logging

from llama_jax.core import allocator
from llama_jax.core.errors import UsageError

# Appended to XLA_FLAGS before JAX initialises its CPU backend; none beyond XLA's defaults.
DEFAULT_CPU_FLAGS = ""

HF = "hf_torch"
# The baseline again, its child process on glibc's default malloc (LLAMA_JAX_MALLOC=system)
# whatever this process runs on: what HF + torch gets on a fresh machine.
HF_SYSTEM = "hf_torch_system_malloc"
STEP_COMPILE = ("backend", "xla_defaults")


def batch_for(config, seq_len: int, mode: str) -> int:
  if mode == "fixed":
    return int(config.batch_size)
  return max(1, int(config.batch_size) * int(config.seq_len) // seq_len)


def run(config, out_dir: str, seq_lens: list[int], impls: list[str], batch_mode: str = "tokens",
        steps: int = 5, warmup: int = 2, time_steps: bool = True, torch_threads: int = 0,
        command: str = "", name: str = "config", step_compile: str = "backend") -> list[dict]:
  """The whole benchmark; returns the records it wrote to `out_dir`."""
  import jax

  from llama_jax import attention as attention_lib
  from llama_jax.core import compilation as compile_options
  from llama_jax.perf import report as bench_report
  from llama_jax.training import validation as config_lib

  if steps < 1 or warmup < 0:
    raise UsageError(f"--steps={steps} must be >= 1 and --warmup={warmup} >= 0")
  for impl in impls:
    if impl not in (HF, HF_SYSTEM) and impl not in attention_lib.names():
      raise UsageError(f"--impls: {impl!r} is neither {HF!r} nor an attention kernel "
                       f"{attention_lib.names()}")
  if step_compile not in STEP_COMPILE:
    raise UsageError(f"--step_compile={step_compile!r}; allowed: {list(STEP_COMPILE)}")
  compilation = (compile_options.for_backend() if step_compile == "backend"
                 else compile_options.DEFAULT)
  if not seq_lens or any(t < 1 for t in seq_lens):
    raise UsageError(f"--seq_lens={seq_lens} must be positive integers")
  checked = config_lib.validate(config, check_paths=False)
  base_cfg, adapter = checked.model, checked.spec.adapter
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)

  peaks = bench_report.device_peaks(base_cfg.dtype)
  device = jax.devices()[0]
  header = {
      "config": name, "command": command,
      "device": f"{device.device_kind} ({device.platform}), {len(os.sched_getaffinity(0))} "
                f"usable cores",
      "model": (f"vocab {base_cfg.vocab_size}, d_model {base_cfg.d_model}, {base_cfg.n_layers} "
                f"layers, {base_cfg.n_heads} heads ({base_cfg.n_kv_heads} kv), ffn "
                f"{base_cfg.ffn_dim}, {base_cfg.num_params() / 1e6:.1f}M params, "
                f"{base_cfg.dtype}, remat {base_cfg.remat}"),
      "batch_mode": ("tokens per step fixed at batch_size x seq_len" if batch_mode == "tokens"
                     else "batch_size rows at every length"),
      "peak_measured": f"{peaks['measured'] / 1e9:.1f} GFLOP/s ({peaks['measured_source']})",
      "peak_datasheet": (f"{peaks['datasheet'] / 1e9:.1f} GFLOP/s ({peaks['datasheet_source']})"
                         if peaks.get("datasheet") else peaks["datasheet_source"]),
      "adapter": ("none (full training)" if adapter is None else
                  f"{adapter!r}: {checked.spec.num_params(True):,} trainable parameters; "
                  "model FLOPs = 2x forward"),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "step_compile": (f"{step_compile}: compiler_options {compilation.xla_options}, "
                       f"vocab_chunk {compilation.vocab_chunk or 'none'}"),
      "allocator": allocator.describe(),
      "peaks": peaks,
  }
  rows_all, flops = [], {}
  for seq_len in seq_lens:
    batch = batch_for(config, seq_len, batch_mode)
    cfg_t = base_cfg.replace(max_position_embeddings=max(base_cfg.max_position_embeddings,
                                                         seq_len))
    flops[seq_len] = (cfg_t.flops_per_token(seq_len) if adapter is None
                      else 2 * cfg_t.flops_per_token(seq_len, training=False))
    rows = _measure_length(config, cfg_t, impls, batch, seq_len, steps, warmup, time_steps,
                           torch_threads, header, device, compilation, adapter)
    rows_all += rows
    if time_steps:  # the peak again, at the load the steps just saw; the best one counts
      again = bench_report.device_peaks(base_cfg.dtype)
      peaks["measured"] = max(peaks["measured"], again["measured"])
    for row in rows:
      print(_line(bench_report.add_rates(dict(row), flops[seq_len], peaks)), flush=True)
  header["peak_measured"] = (f"{peaks['measured'] / 1e9:.1f} GFLOP/s (best over the run of: "
                             f"{peaks['measured_source']})")
  records = [bench_report.add_rates(r, flops[r["seq_len"]], peaks) for r in rows_all]
  bench_report.add_ratios(records, HF)
  bench_report.add_ratios(records, HF_SYSTEM)
  bench_report.write_json(out / "bench.json", header, records)
  bench_report.write_markdown(out / "bench.md", header, records)
  bench_report.write_plot(out / "bench.png", header, records)
  return records


def _measure_length(config, cfg_t, impls, batch, seq_len, steps, warmup, time_steps,
                    torch_threads, header, device, compilation=None,
                    adapter=None) -> list[dict]:
  """Compiles (and times, interleaved) every implementation at one length; one row each."""
  from llama_jax.perf import jax_step as bench_jax
  from llama_jax.perf import report as bench_report
  runners, rows = {}, {}
  for impl in impls:
    row = {"impl": impl, "seq_len": seq_len, "batch": batch}
    try:
      if impl in (HF, HF_SYSTEM):
        if not time_steps:
          continue
        rows[impl] = row
        if device.platform != "cpu":
          row["note"] = "skipped: the baseline runs on CPU only in this benchmark"
          continue
        from llama_jax.perf import torch_step as bench_torch
        runner = bench_torch.TorchStep(cfg_t, config.optim, threads=torch_threads or None,
                                       adapter=adapter,
                                       malloc="system" if impl == HF_SYSTEM else None)
        header["torch_threads"] = runner.threads
        header[f"{impl}_allocator"] = runner.allocator
        runner.set_batch(bench_jax.synthetic_batch(batch, seq_len, cfg_t.vocab_size))
      else:
        rows[impl] = row
        runner = bench_jax.JaxStep(cfg_t.replace(attention=impl), config.optim, batch, seq_len,
                                   compilation=compilation, adapter=adapter)
        info = runner.compile()
        row.update(compile_seconds=info["compile_seconds"],
                   peak_memory_bytes=info["memory"].get("peak_bytes"), memory=info["memory"],
                   xla_flops_per_step=info["xla_flops_per_step"])
        if time_steps:
          runner.setup()
      runners[impl] = runner
    except Exception as e:
      row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
      logging.warning("%s at seq_len %d: %s", impl, seq_len, row["error"])
  try:
    if time_steps and runners:
      for runner in runners.values():
        for _ in range(warmup):
          runner.step()
      times = {impl: [] for impl in runners}
      for _ in range(steps):  # interleaved rounds
        for impl, runner in runners.items():
          times[impl].append(runner.step())
      for impl, runner in runners.items():
        rows[impl].update(bench_report.summarize(times[impl]))
        rows[impl]["final_loss"] = runner.last_loss
        if impl in (HF, HF_SYSTEM):
          rows[impl]["peak_memory_bytes"] = runner.memory()["peak_rss_bytes"]
        else:
          peak = bench_jax.device_peak_bytes(device)
          if peak is not None:  # GPU/TPU: the allocator's running peak over the process
            rows[impl]["device_peak_bytes"] = rows[impl]["peak_memory_bytes"] = peak
  finally:
    for runner in runners.values():
      runner.close()
  return list(rows.values())


def _line(r: dict) -> str:
  parts = [f"{r['impl']:>9} T={r['seq_len']:<6} B={r['batch']:<3}"]
  if r.get("tokens_per_sec"):
    parts.append(f"{1e3 * r['step_seconds']:8.0f} ms  {r['tokens_per_sec']:9,.0f} tok/s  "
                 f"MFU {100 * r['mfu']:5.1f}%")
  if r.get("compile_seconds") is not None:
    parts.append(f"compile {r['compile_seconds']:.1f}s")
  if r.get("peak_memory_bytes"):
    parts.append(f"mem {r['peak_memory_bytes'] / 2 ** 20:,.1f} MiB")
  if r.get("error"):
    parts.append(f"ERROR {r['error']}")
  return "  ".join(parts)
