"""metrics.jsonl and TensorBoard output, progress lines, MFU arithmetic and peak FLOPs."""
import glob
import io
import json
import math
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from llama_jax.training import metrics


def read_event_scalars(workdir):
  """{tag: [(step, value)]} parsed from the TFRecord event files in `workdir`."""
  out = {}
  files = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
  assert files, os.listdir(workdir)
  for path in files:
    with open(path, "rb") as f:
      data = f.read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4  # length, its crc, payload, payload crc
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def read_jsonl(path):
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_writer_jsonl_and_tensorboard(tmp_path):
  with metrics.MetricsWriter(tmp_path) as writer:
    writer.write(10, {"loss": jnp.float32(2.5), "learning_rate": 1e-3, "tokens": np.int64(4096),
                      "note": "warmup"})
    writer.write(20, {"loss": jnp.asarray([1.75]), "grad_norm": float("nan")})
  records = read_jsonl(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [10, 20]
  assert records[0]["loss"] == 2.5 and records[0]["learning_rate"] == 1e-3
  assert records[0]["tokens"] == 4096 and records[0]["note"] == "warmup"
  assert records[1]["loss"] == 1.75 and records[1]["grad_norm"] is None  # NaN → null
  assert all("time" in r for r in records)
  scalars = read_event_scalars(str(tmp_path))
  assert scalars["loss"] == [(10, 2.5), (20, 1.75)]
  assert scalars["learning_rate"] == [(10, pytest.approx(1e-3))]
  assert scalars["tokens"] == [(10, 4096.0)]
  assert "note" not in scalars


def test_writer_appends_and_resume_drops_newer_records(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as writer:
    for step in (10, 20, 30):
      writer.write(step, {"loss": float(step)})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 40, "lo')  # a line cut off by a crash
  # The run is resumed from the checkpoint at step 20: records after it are replaced.
  with metrics.MetricsWriter(tmp_path, tensorboard=False, resume_step=20) as writer:
    writer.write(30, {"loss": 29.0})
  records = read_jsonl(tmp_path / "metrics.jsonl")
  assert [(r["step"], r["loss"]) for r in records] == [(10, 10.0), (20, 20.0), (30, 29.0)]
  assert not glob.glob(str(tmp_path / ".metrics.*"))


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metrics.MetricsWriter(tmp_path / "run", enabled=False)
  writer.write(1, {"loss": 1.0})
  writer.close()
  assert not os.path.exists(tmp_path / "run")


def test_writer_rejects_non_scalars(tmp_path):
  with metrics.MetricsWriter(tmp_path, tensorboard=False) as writer:
    with pytest.raises(ValueError, match=r"metric 'loss' has shape \(2,\); only scalars"):
      writer.write(1, {"loss": np.zeros(2)})


def test_mfu_hand_computation():
  # 6.5e9 FLOPs/token x 12,000 tokens/s = 7.8e13 FLOP/s achieved, over 8 x 312e12 peak.
  assert metrics.mfu(6.5e9, 12_000, 8, 312e12) == pytest.approx(7.8e13 / 2.496e15, rel=1e-12)
  assert metrics.mfu(6.5e9, 12_000, 8, 312e12) == pytest.approx(0.03125, rel=1e-12)
  with pytest.raises(ValueError, match="n_devices >= 1 and peak > 0"):
    metrics.mfu(1.0, 1.0, 0, 1.0)


@pytest.mark.parametrize("kind,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12),
    ("NVIDIA H100 80GB HBM3", "float32", 494.7e12),
    ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H200", "bfloat16", 989e12),
    ("NVIDIA A100-SXM4-80GB", "bfloat16", 312e12),
    ("NVIDIA A100-SXM4-40GB", "float32", 156e12),
    ("TPU v4", "bfloat16", 275e12),
    ("TPU v5 lite", "bfloat16", 197e12),
    ("TPU v5e", "float32", 197e12),
    ("TPU v5p", "bfloat16", 459e12),
    ("TPU v6 lite", "bfloat16", 918e12),
    ("Some Future Chip", "bfloat16", None),
])
def test_peak_table(kind, dtype, peak):
  assert metrics.table_peak(kind, dtype) == peak


def test_cpu_peak_is_measured_and_cached():
  device = jax.devices()[0]
  peak, source = metrics.peak_flops_per_device(device, dtype="float32")
  assert source.startswith("measured") and "float32" in source
  assert 1e7 < peak < 1e14  # between a slow core's share and far beyond any CPU
  # tests/conftest.py simulates 8 CPU devices on this host: each gets 1/8 of its matmul rate.
  assert source.endswith("shared by 8 CPU devices of this host")
  assert peak == pytest.approx(metrics._MEASURED[(device.id, "float32")] / 8)
  again, _ = metrics.peak_flops_per_device(device, dtype="float32")
  assert again == peak  # cached: not re-measured


def test_matmul_measurement_arithmetic(monkeypatch):
  # A clock that advances 0.5 s per reading: every timed matmul "takes" 0.5 s, so the best
  # rate is the largest size's 2 n^3 FLOPs over 0.5 s.
  ticks = iter(np.arange(0, 1000, 0.5))
  monkeypatch.setattr(metrics.time, "perf_counter", lambda: float(next(ticks)))
  rate = metrics.measure_matmul_flops(jax.devices()[0], "float32", sizes=(64, 128), repeats=2)
  assert rate == pytest.approx(2 * 128 ** 3 / 0.5)


class FakeClock:
  def __init__(self):
    self.t = 100.0

  def __call__(self):
    return self.t


def test_progress_rates_eta_and_line():
  clock, stream = FakeClock(), io.StringIO()
  progress = metrics.Progress(total_steps=100, start_step=20, tokens_per_step=2048,
                              flops_per_token=1e6, n_devices=2, peak_flops=1e9,
                              stream=stream, clock=clock)
  clock.t += 4.0  # 10 steps in 4 s
  out = progress.update(30, loss=jnp.float32(2.25))
  assert out["steps_per_sec"] == pytest.approx(2.5)
  assert out["tokens_per_sec"] == pytest.approx(2048 * 10 / 4)
  assert out["eta_sec"] == pytest.approx(70 * 0.4)
  assert out["mfu"] == pytest.approx(1e6 * 5120 / (2 * 1e9))
  line = stream.getvalue().strip()
  assert line.startswith("step 30/100 (30%)")
  for piece in ("loss 2.25", "5,120 tok/s", "MFU 256.0%", "0.4 s/step", "ETA 0:28"):
    assert piece in line, line
  clock.t += 10.0  # rates use the latest interval only
  out = progress.update(35, tokens=1000)
  assert out["tokens_per_sec"] == pytest.approx(100.0)
  assert out["eta_sec"] == pytest.approx(65 * 2.0)


def test_progress_disabled_prints_nothing():
  stream = io.StringIO()
  progress = metrics.Progress(10, 0, enabled=False, stream=stream)
  progress.update(1)
  assert stream.getvalue() == ""


def test_format_duration():
  assert metrics.format_duration(59.4) == "0:59"
  assert metrics.format_duration(3725) == "1:02:05"
  assert metrics.format_duration(math.inf) == "?"
