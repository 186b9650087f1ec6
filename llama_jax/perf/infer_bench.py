"""Scoring and decoding speed against HF transformers + torch: `bench --mode=eval|generate`.

Both modes load the model the way a user does — a random `LlamaForCausalLM` of the recipe's
shape built and saved by the HF child process (`perf/torch_infer.py`), read back with
`llama_jax.load_hf` — so both sides hold the same weights, and each record says whether they
computed the same numbers. Calls alternate between the two sides (JAX pass, HF pass, JAX pass,
...), so drifting machine load hits both alike; the first pass of each side is a warm-up
(compilation on the JAX side) and is not timed.

eval (the YaRN paper's sliding-window perplexity protocol, `evals.perplexity`): at each window
length W, documents of random tokens are cut into windows of W tokens with stride min(256, W/2)
and scored in batches of max(1, tokens_per_call / W) windows. Rows:
- `llama_jax`: `perplexity.score_windows` (what `evaluate` and a DCIS search run per length);
- `llama_jax_forward`: `nnx.jit(lambda m, x: m(x))` over the same batches: the logits as a user
  gets them from `model(ids)`;
- `hf_torch` / `hf_torch_forward`: the same two in HF (`model(input_ids, attention_mask)`, then
  a float32 log-softmax and the scored targets' NLL; the forward row stops at the logits).
Throughput counts window tokens (rows x W) per second; `compiles_timed` counts XLA compilations
during the timed passes (0: the scoring function is compiled once per window shape).

generate (greedy, batch 1 and 8, a prompt of `prompt` random tokens, `new` new tokens, no EOS):
`generate.generate` against HF `generate` with its dynamic and its static cache. Each side runs
the whole generation and, separately, the same call with one new token (the prefill and one
argmax); decode time = whole - prefill, decode tokens/s = batch x (new - 1) / decode time.
The outputs are compared token for token.
"""
from __future__ import annotations

import functools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

HF = "hf_torch"
HF_CACHES = ("dynamic", "static")


# ------------------------------------------------------------------------------ compile counts
class CompileCounter:
  """Counts XLA backend compilations while active (a `jax.monitoring` listener)."""
  EVENT = "/jax/core/compile/backend_compile_duration"

  def __init__(self):
    import jax
    self.count = 0
    self._on = False
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event, duration, **kwargs):
    del duration, kwargs
    if self._on and event == self.EVENT:
      self.count += 1

  def __enter__(self):
    self.count, self._on = 0, True
    return self

  def __exit__(self, *exc):
    self._on = False


def _header(name, command, mode, cfg, torch_threads) -> dict:
  import jax

  from llama_jax.core import allocator
  device = jax.devices()[0]
  return {
      "config": name, "command": command, "mode": mode,
      "device": f"{device.device_kind} ({device.platform}), {len(os.sched_getaffinity(0))} "
                f"usable cores",
      "model": (f"vocab {cfg.vocab_size}, d_model {cfg.d_model}, {cfg.n_layers} layers, "
                f"{cfg.n_heads} heads ({cfg.n_kv_heads} kv), ffn {cfg.ffn_dim}, "
                f"{cfg.num_params() / 1e6:.1f}M params, {cfg.dtype}; loaded with "
                f"llama_jax.load_hf: attention {cfg.attention}, scan_layers {cfg.scan_layers}"),
      "compilation": "XLA defaults (the train step's CPU options measured no gain here)",
      "allocator": allocator.describe(),
      "torch_threads": torch_threads,
  }


def _hf_model(config, max_len: int, save_dir: str, torch_threads: int):
  """(HF child process, llama_jax model with the same weights)."""
  from llama_jax.interop import convert
  from llama_jax.perf import torch_infer
  from llama_jax.training import validation
  cfg = validation.validate(config, check_paths=False).model
  cfg = cfg.replace(max_position_embeddings=max(cfg.max_position_embeddings, max_len))
  # LLAMA_JAX_BENCH_TORCH_MALLOC=system runs the HF child on glibc's defaults (a fresh machine).
  peer = torch_infer.TorchInference(cfg, save_dir, threads=torch_threads or None,
                                    malloc=os.environ.get("LLAMA_JAX_BENCH_TORCH_MALLOC"))
  return peer, convert.load_hf(save_dir)


def _median(times):
  return {"seconds": statistics.median(times), "seconds_min": min(times), "seconds_all": times}


# ------------------------------------------------------------------------------ eval
def eval_windows(length: int, batch: int, vocab: int, bos_id: int = 1, seed: int = 0):
  """(docs, windows, stride): one random document cut into exactly 2 x `batch` windows."""
  from llama_jax.evals import perplexity
  stride = min(256, max(1, length // 2))
  n_windows = 2 * batch
  n_tokens = (length - 1) + (n_windows - 1) * stride
  rng = np.random.RandomState(seed + length)
  docs = [rng.randint(bos_id + 2, vocab, size=n_tokens).tolist()]
  wins = perplexity.windows(n_tokens, length, stride)
  assert len(wins) == n_windows, (len(wins), n_windows)
  return docs, wins, stride


def run_eval(config, out_dir: str, seq_lens: list[int], steps: int = 3, warmup: int = 1,
             tokens_per_call: int = 4096, torch_threads: int = 0, command: str = "",
             name: str = "config") -> list[dict]:
  """The eval benchmark; returns the records it wrote to `out_dir`/eval.json."""
  import jax
  from flax import nnx

  from llama_jax.evals import perplexity

  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  counter = CompileCounter()
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    peer, model = _hf_model(config, max(seq_lens), tmp, torch_threads)
    try:
      header = _header(name, command, "eval", model.cfg, peer.threads)
      header["hf_torch_allocator"] = peer.allocator
      forward = nnx.jit(lambda m, x: m(x))
      for length in seq_lens:
        batch = max(1, tokens_per_call // length)
        docs, wins, stride = eval_windows(length, batch, model.cfg.vocab_size)
        batches = list(perplexity.window_rows(docs, wins, length, 1, batch))
        tokens = len(batches) * batch * length

        def jax_forward(batches):
          for b in batches:
            logits = forward(model, b["tokens"])
          jax.block_until_ready(logits)

        sides = {
            "llama_jax": functools.partial(perplexity.score_windows, model, docs, wins, length,
                                           1, batch),
            "llama_jax_forward": functools.partial(jax_forward, batches),
            HF: functools.partial(peer.score, batches),
            HF + "_forward": functools.partial(peer.forward, batches)}
        times = {k: [] for k in sides}
        first = {}
        compiles = {"llama_jax": 0, "llama_jax_forward": 0}
        results = {}
        for rep in range(warmup + steps):
          for impl, fn in sides.items():
            with counter:
              start = time.perf_counter()
              result = fn()
              seconds = time.perf_counter() - start
            if impl.startswith(HF):
              seconds = result["seconds"]  # timed in the child, without the pipe
            if rep == 0:
              first[impl] = seconds
            if rep >= warmup:
              times[impl].append(seconds)
              if impl in compiles:
                compiles[impl] += counter.count
            results[impl] = result
        jax_sums, _ = results["llama_jax"]
        hf_sums = results[HF]["sums"]
        ppl = {"llama_jax": perplexity.summarize(*results["llama_jax"])["ppl"],
               HF: perplexity.summarize(hf_sums[:len(wins)],
                                        results[HF]["counts"][:len(wins)])["ppl"]}
        max_diff = float(np.max(np.abs(jax_sums - hf_sums[:len(wins)]) /
                                np.maximum(1.0, np.abs(hf_sums[:len(wins)]))))
        for impl in sides:
          r = {"mode": "eval", "impl": impl, "seq_len": length, "batch": batch,
               "stride": stride, "windows": len(wins), "calls": len(batches),
               "tokens_per_pass": tokens, **_median(times[impl]),
               "first_pass_seconds": first[impl]}
          r["tokens_per_sec"] = tokens / r["seconds"]
          if impl in compiles:
            r["compiles_timed"] = compiles[impl]
          if impl in ppl:
            r["ppl"] = ppl[impl]
          r["nll_max_rel_diff_vs_hf"] = max_diff
          records.append(r)
        for impl, base in (("llama_jax", HF), ("llama_jax_forward", HF + "_forward")):
          mine = [r for r in records if r["seq_len"] == length and r["impl"] == impl][0]
          ref = [r for r in records if r["seq_len"] == length and r["impl"] == base][0]
          mine["vs_hf_torch"] = mine["tokens_per_sec"] / ref["tokens_per_sec"]
          ref["vs_hf_torch"] = 1.0
        for r in records[-len(sides):]:
          print(_eval_line(r), flush=True)
    finally:
      peer.close()
  _write(out, "eval", header, records)
  return records


def _eval_line(r):
  ratio = f"  vs HF {r['vs_hf_torch']:.2f}" if r.get("vs_hf_torch") else ""
  return (f"{r['impl']:>18} T={r['seq_len']:<5} B={r['batch']:<3} {r['seconds']:7.2f} s  "
          f"{r['tokens_per_sec']:9,.0f} tok/s{ratio}")


# ------------------------------------------------------------------------------ generate
def run_generate(config, out_dir: str, batches=(1, 8), prompt: int = 512, new: int = 128,
                 steps: int = 3, warmup: int = 1, torch_threads: int = 0, command: str = "",
                 name: str = "config", hf_caches=HF_CACHES) -> list[dict]:
  """The generate benchmark; returns the records it wrote to `out_dir`/generate.json."""
  from llama_jax.inference import generate as gen

  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  counter = CompileCounter()
  records = []
  with tempfile.TemporaryDirectory() as tmp:
    peer, model = _hf_model(config, prompt + new, tmp, torch_threads)
    try:
      header = _header(name, command, "generate", model.cfg, peer.threads)
      header["hf_torch_allocator"] = peer.allocator
      vocab = model.cfg.vocab_size
      for b in batches:
        prompts = np.random.RandomState(b).randint(3, vocab, size=(b, prompt)).astype(np.int32)

        def jax_run(prompts, n):
          start = time.perf_counter()
          tokens = np.asarray(gen.generate(model, prompts.tolist(), n))
          return {"seconds": time.perf_counter() - start, "tokens": tokens}

        sides = {"llama_jax": functools.partial(jax_run, prompts)}
        for cache in hf_caches:
          sides[f"{HF}_{cache}"] = functools.partial(_hf_generate, peer, prompts, cache=cache)
        times = {(k, n): [] for k in sides for n in (1, new)}
        compiles, tokens = {1: 0, new: 0}, {}
        for rep in range(warmup + steps):
          for impl, fn in sides.items():
            for n in (1, new):
              with counter:
                result = fn(n)
              if rep >= warmup:
                times[(impl, n)].append(result["seconds"])
                if impl == "llama_jax":
                  compiles[n] += counter.count
              tokens[(impl, n)] = np.asarray(result["tokens"])
        for impl in sides:
          whole = statistics.median(times[(impl, new)])
          pre = statistics.median(times[(impl, 1)])
          r = {"mode": "generate", "impl": impl, "batch": b, "prompt": prompt, "new": new,
               "total_seconds": whole, "total_seconds_all": times[(impl, new)],
               "prefill_seconds": pre, "prefill_seconds_all": times[(impl, 1)],
               "decode_seconds": whole - pre,
               "prefill_tokens_per_sec": b * prompt / pre,
               # None when timing noise makes the difference non-positive (tiny models only).
               "decode_tokens_per_sec": b * (new - 1) / (whole - pre) if whole > pre else None,
               "tokens_per_sec": b * new / whole,
               "same_tokens_as_llama_jax": bool(np.array_equal(tokens[(impl, new)],
                                                               tokens[("llama_jax", new)]))}
          if impl == "llama_jax":
            r["compiles_timed"] = compiles[1] + compiles[new]
          records.append(r)
        rows = records[-len(sides):]
        for key in ("prefill_tokens_per_sec", "decode_tokens_per_sec", "tokens_per_sec"):
          best = max((r[key] for r in rows if r["impl"].startswith(HF) and r[key]), default=None)
          for r in rows:
            r["vs_best_hf_" + key.replace("_tokens_per_sec", "")] = (
                r[key] / best if best and r[key] else None)
        for r in rows:
          print(_generate_line(r), flush=True)
    finally:
      peer.close()
  _write(out, "generate", header, records)
  return records


def _f(value, spec):
  return "—" if value is None else format(value, spec)


def _hf_generate(peer, prompts, n, cache):
  return peer.generate(prompts, n, cache)


def _generate_line(r):
  return (f"{r['impl']:>16} B={r['batch']:<2} prefill {r['prefill_seconds']:6.2f} s "
          f"({r['prefill_tokens_per_sec']:8,.0f} tok/s, vs best HF "
          f"{_f(r['vs_best_hf_prefill'], '.2f')})  decode {r['decode_seconds']:6.2f} s "
          f"({_f(r['decode_tokens_per_sec'], ',.1f')} tok/s, vs best HF "
          f"{_f(r['vs_best_hf_decode'], '.2f')})")


# ------------------------------------------------------------------------------ outputs
def _write(out: Path, mode: str, header: dict, records: list[dict]) -> None:
  from llama_jax.perf import report
  report.write_json(out / f"{mode}.json", header, records)
  lines = [f"# {mode} benchmark: {header['config']}", ""]
  lines += [f"- **{k}**: {v}" for k, v in header.items() if k not in ("config", "mode")]
  lines.append("")
  if mode == "eval":
    lines += ["| impl | window | batch | stride | windows | s per pass (median) | tokens/s | "
              "vs HF | compiles while timed | ppl |", "|" + "---|" * 10]
    for r in records:
      lines.append("| " + " | ".join([
          r["impl"], str(r["seq_len"]), str(r["batch"]), str(r["stride"]), str(r["windows"]),
          f"{r['seconds']:.2f}", f"{r['tokens_per_sec']:,.0f}",
          f"{r['vs_hf_torch']:.2f}" if r.get("vs_hf_torch") else "—",
          str(r.get("compiles_timed", "—")),
          f"{r['ppl']:.3f}" if r.get("ppl") else "—"]) + " |")
  else:
    lines += ["| impl | batch | prefill s | prefill tok/s | vs best HF | decode s | "
              "decode tok/s | vs best HF | same tokens |", "|" + "---|" * 9]
    for r in records:
      lines.append("| " + " | ".join([
          r["impl"], str(r["batch"]), f"{r['prefill_seconds']:.3f}",
          f"{r['prefill_tokens_per_sec']:,.0f}", _f(r["vs_best_hf_prefill"], ".2f"),
          f"{r['decode_seconds']:.3f}", _f(r["decode_tokens_per_sec"], ",.1f"),
          _f(r["vs_best_hf_decode"], ".2f"), str(r["same_tokens_as_llama_jax"])]) + " |")
  (out / f"{mode}.md").write_text("\n".join(lines) + "\n")
  _plot(out / f"{mode}.png", mode, header, records)


def _plot(path: Path, mode: str, header: dict, records: list[dict]) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4))
  if mode == "eval":
    for impl in ("llama_jax", "llama_jax_forward"):
      rows = sorted((r for r in records if r["impl"] == impl), key=lambda r: r["seq_len"])
      ax.plot([r["seq_len"] for r in rows], [r["vs_hf_torch"] for r in rows], "o-", label=impl)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("window length (tokens)")
    ax.set_title("scoring throughput / HF + torch")
  else:
    rows = [r for r in records if r["impl"] == "llama_jax"]
    xs = np.arange(len(rows))
    ax.bar(xs - 0.2, [r["vs_best_hf_prefill"] or 0 for r in rows], 0.4, label="prefill")
    ax.bar(xs + 0.2, [r["vs_best_hf_decode"] or 0 for r in rows], 0.4, label="decode")
    ax.set_xticks(xs, [f"batch {r['batch']}" for r in rows])
    ax.set_title("generation throughput / best HF generate")
  ax.axhline(1.0, color="gray", lw=0.8)
  ax.set_ylabel("ratio (llama_jax / HF)")
  ax.grid(True, alpha=0.3)
  ax.legend()
  fig.suptitle(f"{header['config']} - {header['device']}", fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
