"""Training metrics: metrics.jsonl + TensorBoard, a console progress line, and MFU accounting.

- `MetricsWriter` appends one JSON object per logged step to `<workdir>/metrics.jsonl` (always
  with "step") and writes the same scalars as TensorBoard events (tensorboardX) in the workdir.
  Only the writer with `enabled=True` (process 0) touches files. Non-finite numbers are written
  as JSON null (strict JSON has no NaN). On resume, `resume_step` drops records newer than the
  restored checkpoint so the file describes one consistent history.
- `Progress` prints "step i/N | loss | tokens/s | MFU | s/step | ETA" lines; rates come from
  the interval since the previous update (the first interval includes compilation).
- `peak_flops_per_device` returns a datasheet dense peak for known GPUs/TPUs and, on CPU (or an
  unknown accelerator), a measured one: the best of several timed square matmuls (1024 and 2048)
  in the requested dtype, cached per process. It is the achievable matmul rate of this machine,
  so CPU MFU reads as "fraction of what a plain matmul reaches here"; simulated CPU devices
  share the host's cores, so each is given an equal share of that rate.
- `mfu = flops_per_token * tokens_per_sec / (n_devices * peak)`, with `flops_per_token` from
  `ModelConfig.flops_per_token` (training = 3x forward).

GPU float32 peaks are the TF32 tensor-core rates, because XLA runs float32 matmuls in TF32 at
JAX's default precision; TPUs run float32 matmuls as bf16 passes at default precision, so they use
the bf16 rate.
"""
from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# (device_kind substrings, all lowercase; bf16 dense FLOP/s; float32 FLOP/s at default precision)
# Checked in order, so more specific names come first.
PEAK_FLOPS = (
    (("h200",), 989e12, 494.7e12),
    (("h100", "pcie"), 756e12, 378e12),
    (("h100",), 989e12, 494.7e12),
    (("a100",), 312e12, 156e12),
    (("tpu v4",), 275e12, 275e12),
    (("tpu v5 lite",), 197e12, 197e12),
    (("tpu v5e",), 197e12, 197e12),
    (("tpu v5",), 459e12, 459e12),  # v5p reports "TPU v5" or "TPU v5p"
    (("tpu v6",), 918e12, 918e12),  # v6e ("TPU v6 lite" / "TPU v6e")
)

_MEASURED: dict[tuple[int, str], float] = {}


def _finite_or_none(value: float):
  return value if math.isfinite(value) else None


def _scalar(name: str, value) -> Any:
  """A JSON-ready Python scalar (bool/int/float/str/None) from a number, 0-d array or string."""
  if value is None or isinstance(value, (str, bool)):
    return value
  arr = np.asarray(jax.device_get(value))
  if arr.size != 1:
    raise ValueError(f"metric {name!r} has shape {arr.shape}; only scalars can be logged")
  item = arr.reshape(()).item()
  return _finite_or_none(float(item)) if isinstance(item, float) else item


class MetricsWriter:
  """Writes scalars per step to `<workdir>/metrics.jsonl` and TensorBoard events in `workdir`."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int | None = None,
               filename: str = "metrics.jsonl", tensorboard: bool = True):
    self.enabled = enabled
    self.path = os.path.join(os.fspath(workdir), filename)
    self._file = None
    self._tb = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    if resume_step is not None:
      self._truncate_after(int(resume_step))
    self._file = open(self.path, "a", encoding="utf-8")
    if tensorboard:
      from tensorboardX import SummaryWriter  # imported lazily: only process 0 needs it
      self._tb = SummaryWriter(logdir=os.fspath(workdir))

  def _truncate_after(self, step: int) -> None:
    """Drops records with step > `step` (left by a run that was resumed from `step`)."""
    if not os.path.exists(self.path):
      return
    kept, dropped = [], 0
    with open(self.path, encoding="utf-8") as f:
      for line in f:
        try:
          record = json.loads(line)
        except json.JSONDecodeError:
          dropped += 1  # a line cut off by a crash
          continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and \
            record["step"] > step:
          dropped += 1
          continue
        kept.append(line if line.endswith("\n") else line + "\n")
    if not dropped:
      return
    # Rewrite through a temporary file so a crash here never leaves a half-written history.
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path), prefix=".metrics.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.writelines(kept)
    os.replace(tmp, self.path)

  def write(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs `scalars` (numbers, 0-d arrays, strings) at `step`; strings go to jsonl only."""
    if not self.enabled:
      return
    record = {"step": int(step)}
    for name, value in scalars.items():
      if name == "step":
        continue
      record[name] = _scalar(name, value)
    record.setdefault("time", time.time())
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    self._file.flush()
    if self._tb is not None:
      for name, value in record.items():
        if name not in ("step", "time") and isinstance(value, (int, float)) and \
            not isinstance(value, bool):
          self._tb.add_scalar(name, value, global_step=int(step))

  def flush(self) -> None:
    if self._file is not None:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


# ------------------------------------------------------------------------------ FLOPs
def mfu(flops_per_token: float, tokens_per_sec: float, n_devices: int, peak: float) -> float:
  """Model FLOPs utilisation: achieved model FLOP/s over the devices' combined peak."""
  if n_devices < 1 or not peak > 0:
    raise ValueError(f"mfu needs n_devices >= 1 and peak > 0, got {n_devices} and {peak}")
  return flops_per_token * tokens_per_sec / (n_devices * peak)


def _canonical_dtype(dtype) -> str:
  name = jnp.dtype(dtype).name
  if name not in ("bfloat16", "float32", "float16"):
    raise ValueError(f"peak FLOPs are known for bfloat16/float16/float32, not {name}")
  return name


def table_peak(device_kind: str, dtype="bfloat16") -> float | None:
  """Datasheet dense peak FLOP/s for a device kind (None when the kind is not in the table)."""
  kind, name = device_kind.lower(), _canonical_dtype(dtype)
  for keys, half, single in PEAK_FLOPS:
    if all(k in kind for k in keys):
      return single if name == "float32" else half
  return None


def measure_matmul_flops(device=None, dtype="float32", sizes=(1024, 2048),
                         repeats: int = 3) -> float:
  """Best FLOP/s of timed n x n matmuls (2 n^3 FLOPs each) on `device`, after a warm-up run."""
  device = device or jax.devices()[0]
  best = 0.0
  matmul = jax.jit(jnp.matmul)
  rng = np.random.default_rng(0)
  for n in sizes:
    # Host-made operands: generating them on the device would cost more than the timing.
    a, b = (jax.device_put(rng.standard_normal((n, n), np.float32).astype(dtype), device)
            for _ in range(2))
    matmul(a, b).block_until_ready()  # compile and warm caches
    for _ in range(repeats):
      start = time.perf_counter()
      matmul(a, b).block_until_ready()
      elapsed = time.perf_counter() - start
      best = max(best, 2.0 * n ** 3 / elapsed)
  return best


def peak_flops_per_device(device=None, dtype="bfloat16") -> tuple[float, str]:
  """(peak FLOP/s of one device for `dtype` matmuls, where the number comes from)."""
  device = device or jax.devices()[0]
  name = _canonical_dtype(dtype)
  if device.platform != "cpu":
    peak = table_peak(device.device_kind, name)
    if peak is not None:
      return peak, f"datasheet {name} dense peak of {device.device_kind}"
  key = (device.id, name)
  if key not in _MEASURED:
    _MEASURED[key] = measure_matmul_flops(device, name)
  source = (f"measured: best of 3 {name} 1024/2048 square matmuls on {device.platform}:"
            f"{device.id} ({device.device_kind})")
  if device.platform == "cpu":
    # Simulated CPU devices (--xla_force_host_platform_device_count) share the host's cores,
    # and one device's matmul already uses all of them: each gets an equal share of the peak.
    n = len(jax.local_devices(backend="cpu"))
    if n > 1:
      return _MEASURED[key] / n, source + f", shared by {n} CPU devices of this host"
  return _MEASURED[key], source


# ------------------------------------------------------------------------------ console
def format_duration(seconds: float) -> str:
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  seconds = int(round(seconds))
  h, rest = divmod(seconds, 3600)
  m, s = divmod(rest, 60)
  return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
  """Console progress lines with rates, MFU and ETA; `update` also returns the numbers."""

  def __init__(self, total_steps: int, start_step: int = 0, enabled: bool = True,
               tokens_per_step: int | None = None, flops_per_token: float | None = None,
               n_devices: int | None = None, peak_flops: float | None = None, stream=None,
               clock=time.perf_counter):
    self.total_steps, self.enabled = int(total_steps), enabled
    self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
    self.n_devices, self.peak_flops = n_devices, peak_flops
    self.stream = stream or sys.stdout
    self._clock = clock
    self._start_time = self._last_time = clock()
    self._start_step = self._last_step = int(start_step)

  def update(self, step: int, tokens: int | None = None, **scalars) -> dict[str, float]:
    """Records that training reached `step`; prints a line when enabled.

    `tokens` is the number of tokens processed since the previous update (default:
    tokens_per_step x steps). Returns steps_per_sec, sec_per_step, tokens_per_sec (when known),
    mfu (when FLOPs and peak are known), eta_sec and elapsed_sec.
    """
    now = self._clock()
    steps = int(step) - self._last_step
    dt = max(now - self._last_time, 1e-12)
    if tokens is None and self.tokens_per_step is not None:
      tokens = self.tokens_per_step * steps
    out = {"elapsed_sec": now - self._start_time}
    if steps > 0:
      out["steps_per_sec"] = steps / dt
      out["sec_per_step"] = dt / steps
      out["eta_sec"] = max(self.total_steps - int(step), 0) * dt / steps
      if tokens is not None:
        out["tokens_per_sec"] = tokens / dt
        if self.flops_per_token and self.peak_flops and self.n_devices:
          out["mfu"] = mfu(self.flops_per_token, out["tokens_per_sec"], self.n_devices,
                           self.peak_flops)
    self._last_time, self._last_step = now, int(step)
    if self.enabled:
      print(self._line(int(step), out, scalars), file=self.stream, flush=True)
    return out

  def _line(self, step: int, rates: dict, scalars: dict) -> str:
    parts = [f"step {step}/{self.total_steps} ({100.0 * step / max(self.total_steps, 1):.0f}%)"]
    for name, value in scalars.items():
      value = _scalar(name, value)
      parts.append(f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}")
    if "tokens_per_sec" in rates:
      parts.append(f"{rates['tokens_per_sec']:,.0f} tok/s")
    if "mfu" in rates:
      parts.append(f"MFU {100 * rates['mfu']:.1f}%")
    if "sec_per_step" in rates:
      parts.append(f"{rates['sec_per_step']:.3g} s/step")
      parts.append(f"ETA {format_duration(rates['eta_sec'])}")
    parts.append(f"elapsed {format_duration(rates['elapsed_sec'])}")
    return " | ".join(parts)

  def close(self) -> None:
    if self.enabled:
      self.stream.flush()
