"""Peak FLOP/s references and the benchmark's outputs: bench.json, bench.md, bench.png.

Two peaks per device, so MFU reads both ways:
- measured: the best rate of plain square matmuls in the benchmark's dtype on this device
  (`metrics.peak_flops_per_device`; on GPU/TPU that function returns the datasheet instead,
  and the matmul is timed here) — "what fraction of what this machine's matmuls reach";
- datasheet: the vendor's dense peak (`metrics.table_peak`) for accelerators; for CPUs the
  theoretical FMA peak, cores x clock x FLOPs per cycle of the widest vector unit the CPU
  reports (AVX-512: 2 x 16 lanes x 2, AVX2+FMA: 2 x 8 x 2), at the nominal clock the kernel
  lists (turbo clocks make it an estimate, not a bound).
"""
from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import jax


# ------------------------------------------------------------------------------ peaks
def cpu_theoretical_peak() -> tuple[float | None, str]:
  """(cores x MHz x FLOPs/cycle for float32 FMAs, a description) from /proc/cpuinfo."""
  try:
    with open("/proc/cpuinfo") as f:
      info = f.read()
  except OSError:
    return None, "unknown (no /proc/cpuinfo)"
  flags, mhz = set(), None
  for line in info.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "flags" and not flags:
      flags = set(value.split())
    elif key == "cpu MHz" and mhz is None:
      mhz = float(value)
  if mhz is None:
    return None, "unknown (no clock in /proc/cpuinfo)"
  if "avx512f" in flags:
    per_cycle, isa = 64, "AVX-512 FMA x2"
  elif "avx2" in flags and "fma" in flags:
    per_cycle, isa = 32, "AVX2 FMA x2"
  elif "avx" in flags:
    per_cycle, isa = 16, "AVX"
  else:
    per_cycle, isa = 8, "SSE"
  cores = len(os.sched_getaffinity(0))
  peak = cores * mhz * 1e6 * per_cycle
  return peak, (f"theoretical float32: {cores} cores x {mhz:.0f} MHz x {per_cycle} FLOP/cycle "
                f"({isa})")


def device_peaks(dtype: str) -> dict:
  """{'measured': FLOP/s, 'measured_source', 'datasheet': FLOP/s or None, 'datasheet_source'}."""
  from llama_jax.training import metrics
  device = jax.devices()[0]
  measured = metrics.measure_matmul_flops(device, dtype, sizes=(1024, 2048), repeats=5)
  out = {"measured": measured,
         "measured_source": f"best of 5 {dtype} 1024/2048 square matmuls on {device.device_kind}"}
  if device.platform == "cpu":
    out["datasheet"], out["datasheet_source"] = cpu_theoretical_peak()
  else:
    out["datasheet"] = metrics.table_peak(device.device_kind, dtype)
    out["datasheet_source"] = (f"datasheet {dtype} dense peak of {device.device_kind}"
                               if out["datasheet"] else "unknown device kind")
  return out


# ------------------------------------------------------------------------------ records
def summarize(times: list[float]) -> dict:
  return {"step_seconds": statistics.median(times), "step_seconds_min": min(times),
          "step_seconds_all": times}


def add_rates(record: dict, flops_per_token: float, peaks: dict) -> dict:
  tokens = record["batch"] * record["seq_len"]
  record["tokens_per_step"] = tokens
  if record.get("step_seconds"):
    tps = tokens / record["step_seconds"]
    record["tokens_per_sec"] = tps
    record["model_tflops_per_sec"] = flops_per_token * tps / 1e12
    record["mfu"] = flops_per_token * tps / peaks["measured"]
    record["mfu_datasheet"] = (flops_per_token * tps / peaks["datasheet"]
                               if peaks.get("datasheet") else None)
  else:
    for key in ("tokens_per_sec", "model_tflops_per_sec", "mfu", "mfu_datasheet"):
      record.setdefault(key, None)
  record["model_flops_per_token"] = flops_per_token
  return record


def add_ratios(records: list[dict], baseline: str = "hf_torch") -> None:
  """tokens/s relative to the baseline implementation at the same seq_len."""
  base = {r["seq_len"]: r.get("tokens_per_sec") for r in records if r["impl"] == baseline}
  for r in records:
    b = base.get(r["seq_len"])
    r["vs_" + baseline] = (r["tokens_per_sec"] / b
                           if b and r.get("tokens_per_sec") else None)


# ------------------------------------------------------------------------------ outputs
def _fmt(value, spec):
  return "—" if value is None else format(value, spec)


def write_json(path: Path, header: dict, records: list[dict]) -> None:
  path.write_text(json.dumps({"header": header, "records": records}, indent=2) + "\n")


def write_markdown(path: Path, header: dict, records: list[dict]) -> None:
  lines = [f"# Benchmark: {header['config']}", ""]
  for key in ("command", "device", "model", "adapter", "batch_mode", "peak_measured",
              "peak_datasheet", "xla_flags", "step_compile", "allocator", "hf_torch_allocator",
              "hf_torch_system_malloc_allocator", "torch_threads"):
    if header.get(key) is not None:
      lines.append(f"- **{key}**: {header[key]}")
  lines += ["", "| impl | seq_len | batch | step ms (median) | tokens/s | model TFLOP/s | "
            "MFU (measured peak) | MFU (datasheet) | vs HF | compile s | peak memory MiB | "
            "note |", "|" + "---|" * 12]
  for r in records:
    mem = r.get("peak_memory_bytes")
    lines.append("| " + " | ".join([
        r["impl"], str(r["seq_len"]), str(r["batch"]),
        _fmt(r.get("step_seconds") and 1e3 * r["step_seconds"], ".0f"),
        _fmt(r.get("tokens_per_sec"), ",.0f"), _fmt(r.get("model_tflops_per_sec"), ".4f"),
        _fmt(r.get("mfu") and 100 * r["mfu"], ".1f") + ("%" if r.get("mfu") else ""),
        _fmt(r.get("mfu_datasheet") and 100 * r["mfu_datasheet"], ".1f") +
        ("%" if r.get("mfu_datasheet") else ""),
        _fmt(r.get("vs_hf_torch"), ".2f") + (
            f" ({r['vs_hf_torch_system_malloc']:.2f})" if r.get("vs_hf_torch_system_malloc")
            else ""), _fmt(r.get("compile_seconds"), ".1f"),
        _fmt(mem and mem / 2 ** 20, ",.1f"), r.get("note", "") or r.get("error", "")]) + " |")
  lines += ["", "Peak memory: llama_jax = XLA's compiled memory plan per device (arguments + "
            "outputs - donated + temporaries), or the allocator peak on GPU; HF = the torch "
            "process's peak RSS above its RSS before the model was built.", ""]
  path.write_text("\n".join(lines))


def write_plot(path: Path, header: dict, records: list[dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
  for impl in dict.fromkeys(r["impl"] for r in records):
    rows = sorted((r for r in records if r["impl"] == impl), key=lambda r: r["seq_len"])
    timed = [r for r in rows if r.get("tokens_per_sec")]
    if timed:
      ax_t.plot([r["seq_len"] for r in timed], [r["tokens_per_sec"] for r in timed], "o-",
                label=impl)
    mem = [r for r in rows if r.get("peak_memory_bytes")]
    if mem:
      ax_m.plot([r["seq_len"] for r in mem], [r["peak_memory_bytes"] / 2 ** 20 for r in mem],
                "o-", label=impl)
  for ax, title, unit in ((ax_t, "train-step throughput", "tokens/s"),
                          (ax_m, "peak train-step memory", "MiB")):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length")
    ax.set_ylabel(unit)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if ax.lines:
      ax.legend()
  fig.suptitle(f"{header['config']} — {header['device']} ({header['batch_mode']})", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
