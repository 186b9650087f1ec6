"""Peak memory and wall time of checkpoint conversion for a ~1B-parameter model.

Builds a random HF LlamaForCausalLM checkpoint on disk (TinyLlama-1.1B shapes by default:
d_model 2048, 22 layers, 32 query / 4 key-value heads, ffn 5632, vocab 32000), written shard by
shard with the safetensors library's own writer, then runs in separate processes:
  0. a process that only imports what the conversion imports (fixed overhead)
  1. python -m llama_jax.convert --from=hf --to=llama_jax   (import)
  2. python -m llama_jax.convert --from=llama_jax --to=hf   (export)
  3. convert.load_params(converted dir)                     (restore to host NumPy)
and reports each one's wall time and peak RSS (ru_maxrss of that child, via os.wait4) against
the checkpoint's size on disk. Goal: peak RSS <= 1.3x the checkpoint size.

The measuring process imports only the standard library and builds the checkpoint in a child
of its own: Linux carries a process's RSS high-water mark across fork+exec, so a large parent
would inflate every child's ru_maxrss.

  python experiments/convert_memory.py                    # bfloat16 on disk, ~2.2 GB
  python experiments/convert_memory.py --dtype=float32    # ~4.4 GB
  python experiments/convert_memory.py --layers=4         # a quick smaller run

Measured (2-core shared CPU VM, 24 GiB; 1.100B parameters; wall times vary with load):
  bfloat16, 2.049 GiB on disk:  import-only 0.21 GiB;  hf -> llama_jax 38-51 s, 2.40 GiB
    (1.17x);  llama_jax -> hf 32 s, 0.47 GiB (0.23x);  load_params 16 s, 2.83 GiB (1.38x).
  float32, 4.098 GiB on disk:   hf -> llama_jax 51 s, 4.56 GiB (1.11x);  llama_jax -> hf
    55 s, 0.73 GiB (0.18x);  load_params 38 s, 4.80 GiB (1.17x).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def build_checkpoint(src: Path, args) -> int:
  """Writes config.json + sharded safetensors of random weights; returns bytes of tensors."""
  import numpy as np
  from safetensors.numpy import save_file

  from llama_jax.checkpoints.converted import np_dtype
  from llama_jax.interop import hf_layout as weights
  from llama_jax.model.config import ModelConfig
  cfg = ModelConfig(vocab_size=32000, d_model=2048, n_layers=args.layers, n_heads=32,
                    n_kv_heads=4, ffn_dim=5632, norm_eps=1e-5, max_position_embeddings=2048)
  src.mkdir(parents=True)
  (src / "config.json").write_text(json.dumps(cfg.to_hf(torch_dtype=args.dtype), indent=2))
  dtype = np_dtype(args.dtype)
  rng = np.random.default_rng(0)
  shapes = weights.expected_hf_shapes(cfg)
  groups, size = [[]], 0
  for name, shape in shapes.items():
    nbytes = math.prod(shape) * dtype.itemsize
    if groups[-1] and size + nbytes > args.shard_bytes:
      groups.append([])
      size = 0
    groups[-1].append(name)
    size += nbytes
  n, weight_map, total = len(groups), {}, 0
  for k, names in enumerate(groups):
    file = f"model-{k + 1:05d}-of-{n:05d}.safetensors"
    tensors = {}
    for name in names:
      w = rng.standard_normal(shapes[name], dtype=np.float32)
      w *= 0.02
      if name.endswith("norm.weight"):
        w += 1.0
      tensors[name] = w.astype(dtype)
      weight_map[name] = file
      total += tensors[name].nbytes
    save_file(tensors, str(src / file), metadata={"format": "pt"})
    del tensors
  (src / "model.safetensors.index.json").write_text(
      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
  print(f"built {src}: {cfg.num_params() / 1e9:.3f}B parameters, {args.dtype}, {n} shards")
  return total


def disk_bytes(path: Path) -> int:
  return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(cmd: list[str]) -> tuple[float, int, str]:
  """(wall seconds, peak RSS bytes, output) of one child process."""
  start = time.time()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  out = proc.stdout.read()
  _, status, usage = os.wait4(proc.pid, 0)
  proc.returncode = os.waitstatus_to_exitcode(status)
  wall = time.time() - start
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
  return wall, usage.ru_maxrss * 1024, out  # Linux reports KiB


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
  parser.add_argument("--layers", type=int, default=22)
  parser.add_argument("--shard_bytes", type=int, default=10**9)
  parser.add_argument("--workdir", default="/tmp/llama_jax_convert_memory")
  parser.add_argument("--keep", action="store_true", help="keep the checkpoints afterwards")
  parser.add_argument("--build_only", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()

  work = Path(args.workdir)
  src, lj, hf = work / "hf_src", work / "llama_jax", work / "hf_out"
  if args.build_only:
    build_checkpoint(src, args)
    return
  shutil.rmtree(work, ignore_errors=True)
  work.mkdir(parents=True)
  subprocess.run([sys.executable, __file__, "--build_only", *sys.argv[1:]], check=True)
  size = disk_bytes(src)
  env_py = [sys.executable]
  runs = {
      "import only (jax, orbax, safetensors)": env_py + [
          "-c", "import llama_jax.convert, llama_jax.hf_format, llama_jax.model, "
          "orbax.checkpoint, safetensors"],
      "hf -> llama_jax": env_py + ["-m", "llama_jax.convert", "--from=hf", "--to=llama_jax",
                                   f"--src={src}", f"--dst={lj}"],
      "llama_jax -> hf": env_py + ["-m", "llama_jax.convert", "--from=llama_jax", "--to=hf",
                                   f"--src={lj}", f"--dst={hf}", "--max_shard_size=1GB"],
      "load_params (host NumPy)": env_py + [
          "-c", f"from llama_jax import convert; convert.load_params({str(lj)!r})"],
  }
  print(f"checkpoint on disk: {size / 2**30:.3f} GiB ({size:,} bytes)")
  print(f"{'run':40s} {'wall s':>8s} {'peak RSS GiB':>13s} {'RSS / ckpt':>11s}")
  for name, cmd in runs.items():
    wall, rss, out = measure(cmd)
    print(f"{name:40s} {wall:8.1f} {rss / 2**30:13.3f} {rss / size:11.2f}", flush=True)
    if "-m" in cmd:
      report = [line for line in out.splitlines() if line.startswith(("converted", "  "))]
      print("    " + "\n    ".join(report))
  print(f"converted dir on disk: {disk_bytes(lj) / 2**30:.3f} GiB; export: "
        f"{disk_bytes(hf) / 2**30:.3f} GiB")
  if not args.keep:
    shutil.rmtree(work)


if __name__ == "__main__":
  main()
