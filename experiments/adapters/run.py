r"""The adapters miniature, end to end: data, a pretrained base, five fine-tunes, their scores.

  python experiments/adapters/run.py [--work=runs/adapters_miniature] [--out=DIR] [--smoke]

1. `make_data.py` writes the word problems, the pretraining corpus and the tokenizer into
   <work>/data (kept when its manifest matches);
2. `python -m llama_jax.train --config=pretrain.py` pretrains the base in <work>/pretrain (once:
   a finished base is reused);
3. for each method (full, lora, series, parallel, prefix) `python -m llama_jax.train
   --config=finetune.py:method=<m>` fine-tunes it from the base in <work>/<m> — every method
   the same steps, batch and data order — as a child process whose peak resident memory the
   driver reads from the OS (`os.wait4`); a finished method is reused with its record;
4. the registered math evaluation (`llama_jax.evaluate`'s Python API, greedy decoding) scores
   the base and every fine-tune on the two generated test sets;
5. writes `results.json`, `results.md` (the table) and `results.png` (the plot) into --out.

Per method: accuracy per test set and their mean; trainable parameters and their share of the
adapted model's parameters (peft's "trainable%"); step time = median of the per-step times the
trainer logs (`sec_per_step` in metrics.jsonl, every step logged), the first step (compilation)
left out; memory twice — the training process's peak RSS (whole process: JAX runtime, data,
compilation included) and XLA's buffer assignment of the compiled train step (arguments +
outputs - donated aliases + temporaries: parameters, optimizer state, batch and activations).
For every run, also where its one-step answers go wrong (`diagnose`: numbers copied from the
question, operation, arithmetic of the numbers it wrote, answer format).

`--smoke` runs the same pipeline at toy sizes in about a minute (the CI test); `--methods`
picks a subset; `--split` chooses what fine-tuning and test never share (`make_data.py`).
Rerunning with the same --work reuses what is finished; `--fresh` redoes the fine-tunes and
evaluations (the data and base are still reused).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
for _path in (ROOT, HERE):  # this checkout's llama_jax (whatever else is installed), make_data
  if str(_path) not in sys.path:
    sys.path.insert(0, str(_path))

import make_data  # noqa: E402  (beside this file)

METHODS = ("full", "lora", "series", "parallel", "prefix")
LABELS = {"base": "base (no fine-tuning)", "full": "Full fine-tuning", "lora": "LoRA",
          "series": "Series adapter", "parallel": "Parallel adapter", "prefix": "Prefix tuning"}
DONE = "miniature_record.json"  # a finished step's record, in its workdir


def _recipe(name: str, work: Path, scale: str, **extra) -> str:
  args = ",".join([f"work={work}", f"scale={scale}"] + [f"{k}={v}" for k, v in extra.items()])
  return f"{HERE / name}:{args}"


def _child_env() -> dict:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "")
                                                     .split(os.pathsep) if p])
  return env


def train(recipe: str, workdir: Path, log: Path) -> dict:
  """Runs `python -m llama_jax.train` as a child; its wall time and peak RSS (from wait4)."""
  log.parent.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, "-m", "llama_jax.train", f"--config={recipe}", f"--workdir={workdir}"]
  start = time.perf_counter()
  load = os.getloadavg()
  with open(log, "w") as out:
    child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_child_env(),
                             cwd=ROOT)
    _, status, usage = os.wait4(child.pid, 0)
  child.returncode = os.waitstatus_to_exitcode(status)
  wall = time.perf_counter() - start
  if child.returncode != 0:
    tail = "\n".join(log.read_text().splitlines()[-20:])
    raise RuntimeError(f"{' '.join(cmd)} exited with {child.returncode}; log {log}:\n{tail}")
  # Linux reports ru_maxrss in KiB.
  return {"command": " ".join(cmd[1:]), "wall_s": wall, "max_rss_mib": usage.ru_maxrss / 1024,
          "cpu_s": usage.ru_utime + usage.ru_stime, "load_before": load,
          "load_after": os.getloadavg()}


def step_times(workdir: Path) -> dict:
  """Median (and spread) of the logged per-step seconds after the first (compiling) step, and
  the mean training loss of the last tenth of the steps."""
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
          if line.strip()]
  timed = [r for r in rows if "sec_per_step" in r and r["step"] > 1]
  losses = [r["loss"] for r in rows if "loss" in r]
  seconds = sorted(r["sec_per_step"] for r in timed)
  tail = losses[-max(1, len(losses) // 10):]
  out = {"final_loss": sum(tail) / len(tail), "first_loss": losses[0] if losses else None}
  if seconds:
    out.update(step_ms=1e3 * statistics.median(seconds),
               step_ms_p10=1e3 * seconds[len(seconds) // 10],
               step_ms_p90=1e3 * seconds[(9 * len(seconds)) // 10], timed_steps=len(seconds))
  return out


def step_memory(recipe: str) -> dict:
  """Parameter counts, and XLA's memory figures for the compiled train step of the recipe
  (compiled on one device here, with the batch the trainer feeds; nothing is run)."""
  import jax
  import numpy as np

  from llama_jax.parallel import mesh as mesh_lib
  from llama_jax.parallel import sharding
  from llama_jax.training import recipes, validation
  from llama_jax.training import state as state_lib
  from llama_jax.training import step as train_step
  c = recipes.load(recipe)
  tc = validation.validate(c, check_paths=False)
  spec = tc.spec
  tx, schedule = state_lib.make_optimizer(spec, c.optim, c.steps)
  mesh = mesh_lib.make_mesh(c.mesh, jax.devices()[:1])
  b, t = c.batch_size // c.grad_accum, c.seq_len
  batch = {k: jax.ShapeDtypeStruct((b, t), np.float32 if k == "loss_mask" else np.int32)
           for k in train_step.BATCH_KEYS}
  with jax.set_mesh(mesh):
    abstract = state_lib.abstract_state(spec, tx, c.seed)
    shardings = state_lib.state_shardings(abstract, spec, mesh)
    state = sharding.with_shardings(abstract, shardings)
    fn = train_step.make_train_step(spec, tx, schedule, grad_accum=c.grad_accum,
                                    shardings=shardings)
    m = fn.lower(state, batch).compile().memory_analysis()
  mib = 2.0 ** 20
  out = {"trainable_params": spec.num_params(True), "total_params": spec.num_params(),
         "base_params": tc.model.num_params()}
  out["trainable_share"] = out["trainable_params"] / out["total_params"]
  if m is not None:
    out.update(
        xla_arguments_mib=m.argument_size_in_bytes / mib,
        xla_temp_mib=m.temp_size_in_bytes / mib,
        xla_step_mib=(m.argument_size_in_bytes + m.output_size_in_bytes
                      - m.alias_size_in_bytes + m.temp_size_in_bytes) / mib)
  return out


def evaluate(checkpoint: Path, out: Path, label: str, data_dir: Path, batch_size: int,
             max_new_tokens: int) -> dict:
  """The registered math evaluation of a workdir (greedy), as `python -m llama_jax.evaluate
  --task=math` runs it."""
  from llama_jax import evaluate as evaluate_cli
  start = time.perf_counter()
  opts = evaluate_cli.Options(
      task="math", out=str(out), checkpoint=str(checkpoint), label=label,
      data_dir=str(data_dir), datasets=make_data.TEST_SETS, num_beams=1,
      max_new_tokens=max_new_tokens, batch_size=batch_size)
  written = evaluate_cli.run(opts)
  record = json.loads(Path(written["json"]).read_text())
  return {"accuracy": {d: v["accuracy"] for d, v in record["datasets"].items()},
          "average": record["average"], "eval_s": time.perf_counter() - start,
          "result_file": str(written["json"]),
          "examples": [{k: i[k] for k in ("dataset", "response", "answer", "correct")}
                       for i in record["items"][:3]]}


def diagnose(result_file: str, data_dir: Path) -> dict:
  """Where one-step (AddSub) answers go wrong, from the evaluation's saved responses: the share
  whose first equation copies both of the question's numbers, uses the question's operation,
  and is itself correct (whatever numbers it used); and the share in the answer format."""
  import re
  record = json.loads(Path(result_file).read_text())
  questions = json.loads((data_dir / "AddSub" / "test.json").read_text())
  counts = {"copied": 0, "operation": 0, "own_arithmetic": 0, "format": 0}
  items = [i for i in record["items"] if i["dataset"] == "AddSub"]
  for item in items:
    question = questions[item["index"]]["instruction"]
    counts["format"] += "The answer is" in item["response"]
    m = re.search(r"(\d+) ([+-]) (\d+) = (\d+)", item["response"])
    if not m:
      continue
    x, op, y, z = m.groups()
    counts["copied"] += [x, y] == re.findall(r"\d+", question)[:2]
    counts["operation"] += (op == "+") == ("more" in question)
    counts["own_arithmetic"] += (int(x) + int(y) if op == "+" else int(x) - int(y)) == int(z)
  return {k: v / max(len(items), 1) for k, v in counts.items()}


# ------------------------------------------------------------------------------ reports
def table(results: dict) -> str:
  rows = results["runs"]
  sets = make_data.TEST_SETS
  lines = [
      "| method | trainable params | share % | lr | " + " | ".join(f"{s} %" for s in sets) +
      " | mean % | final train loss | step ms (median) | XLA step MiB | peak RSS MiB |",
      "|---" * (9 + len(sets)) + "|"]
  diagnosis = ["", "Where the one-step (AddSub) answers go wrong (% of the 200 responses): "
               "the first equation copies both numbers of the question / uses its operation / "
               "is correct for the numbers it used; and the response ends in the answer "
               "format.", "", "| method | numbers copied | operation | own arithmetic | "
               "format |", "|---|---|---|---|---|"]
  for name, r in rows.items():
    d = r.get("diagnosis")
    if d:
      diagnosis.append(f"| {LABELS[name]} | {100 * d['copied']:.1f} | "
                       f"{100 * d['operation']:.1f} | {100 * d['own_arithmetic']:.1f} | "
                       f"{100 * d['format']:.1f} |")
  for name, r in rows.items():
    acc = [f"{100 * r['accuracy'][s]:.1f}" for s in sets]
    if name == "base":
      lines.append(f"| {LABELS[name]} | - | - | - | " + " | ".join(acc) +
                   f" | {100 * r['average']:.1f} | - | - | - | - |")
      continue
    lines.append(
        f"| {LABELS[name]} | {r['trainable_params']:,} | {100 * r['trainable_share']:.2f} | "
        f"{r['lr']:g} | " + " | ".join(acc) + f" | {100 * r['average']:.1f} | "
        f"{r['final_loss']:.3f} | {r.get('step_ms', float('nan')):.0f} | "
        f"{r.get('xla_step_mib', float('nan')):.1f} | {r['max_rss_mib']:.0f} |")
  return "\n".join(lines + diagnosis) + "\n"


def plot(results: dict, path: Path) -> Path | None:
  """Accuracy per test set and method; accuracy against trainable share (log). Needs
  matplotlib (a dependency of the project); returns None without it."""
  try:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
  except ImportError:
    return None
  from llama_jax.core import files
  runs = results["runs"]
  names = list(runs)
  sets = make_data.TEST_SETS
  fig = Figure(figsize=(11, 4.2), dpi=110)
  FigureCanvasAgg(fig)
  ax = fig.add_subplot(1, 2, 1)
  width = 0.8 / (len(sets) + 1)
  for j, key in enumerate(list(sets) + ["mean"]):
    values = [100 * (runs[n]["average"] if key == "mean" else runs[n]["accuracy"][key])
              for n in names]
    ax.bar([i + (j - len(sets) / 2) * width for i in range(len(names))], values, width,
           label=key)
  ax.set_xticks(range(len(names)), ["\n".join(textwrap.wrap(LABELS[n], 10)) for n in names],
                fontsize="small")
  ax.set_ylabel("test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title("test accuracy: computations fine-tuning never showed (greedy)", fontsize="medium")
  ax.legend(fontsize="small")
  ax.grid(True, axis="y", alpha=0.3)
  ax = fig.add_subplot(1, 2, 2)
  for n in names:
    if n == "base":
      continue
    r = runs[n]
    ax.scatter(100 * r["trainable_share"], 100 * r["average"], s=40)
    ax.annotate(f"{LABELS[n]}\n{r.get('step_ms', float('nan')):.0f} ms/step",
                (100 * r["trainable_share"], 100 * r["average"]), fontsize="x-small",
                xytext=(5, 3), textcoords="offset points")
  ax.set_xscale("log")
  ax.set_xlabel("trainable parameters (% of the model)")
  ax.set_ylabel("mean test accuracy (%)")
  ax.set_ylim(0, 100)
  ax.set_title(f"equal steps ({results['finetune']['steps']} x {results['finetune']['batch']})")
  ax.grid(True, which="both", alpha=0.3)
  fig.tight_layout()
  return files.write_atomic(path, lambda f: fig.savefig(f, format="png"), binary=True)


# ------------------------------------------------------------------------------ main
def run(work: Path, out: Path, scale: str = "full", methods=METHODS, fresh: bool = False,
        split: str = "pairs", say=print) -> dict:
  from llama_jax.core import files
  from llama_jax.training import recipes
  started, load_start = time.perf_counter(), os.getloadavg()
  sizes = make_data.SMOKE if scale == "smoke" else make_data.FULL
  batch_size = min(50, sizes.test)  # prompts per decoding call
  max_new_tokens = 8 if scale == "smoke" else 64
  work, out = Path(work).absolute(), Path(out).absolute()

  say(f"[data] {work / 'data'}")
  manifest = make_data.write(work / "data", sizes, split=split)
  data_key = {k: manifest[k] for k in ("scale", "seed", "split")}  # what a reused run needs
  timings = {"data_s": time.perf_counter() - started}

  pretrain_dir = work / "pretrain"
  record_path = pretrain_dir / DONE
  pretrain = json.loads(record_path.read_text()) if record_path.is_file() else {}
  if pretrain.get("data") == data_key:
    say(f"[pretrain] reusing {pretrain_dir}")
  else:
    say(f"[pretrain] {pretrain_dir} (log {work / 'logs' / 'pretrain.log'})")
    shutil.rmtree(pretrain_dir, ignore_errors=True)  # an unfinished try starts over
    pretrain = train(_recipe("pretrain.py", work, scale), pretrain_dir,
                     work / "logs" / "pretrain.log")
    pretrain.update(step_times(pretrain_dir), data=data_key)
    files.write_json(record_path, pretrain)
    fresh = True  # a new base: every fine-tune is redone
  say(f"[pretrain] {pretrain['wall_s']:.0f}s, final loss {pretrain['final_loss']:.3f}")

  runs = {}
  say("[eval] base")
  runs["base"] = evaluate(pretrain_dir, work / "eval" / "base", "base", work / "data" / "test",
                          batch_size, max_new_tokens)
  for method in methods:
    workdir = work / method
    record_path = workdir / DONE
    recipe = _recipe("finetune.py", work, scale, method=method)
    previous = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if not fresh and previous.get("data") == data_key:
      say(f"[{method}] reusing {workdir}")
      runs[method] = previous
      continue
    shutil.rmtree(workdir, ignore_errors=True)
    say(f"[{method}] fine-tuning in {workdir} (log {work / 'logs' / (method + '.log')})")
    r = train(recipe, workdir, work / "logs" / f"{method}.log")
    r["lr"] = recipes.load(recipe).optim.peak_lr
    r.update(step_times(workdir))
    r.update(step_memory(recipe))
    say(f"[{method}] {r['wall_s']:.0f}s, final loss {r['final_loss']:.3f}, "
        f"{r.get('step_ms', float('nan')):.0f} ms/step; evaluating")
    r.update(evaluate(workdir, work / "eval" / method, method, work / "data" / "test",
                      batch_size, max_new_tokens))
    say(f"[{method}] accuracy {r['accuracy']} (mean {r['average']:.3f})")
    r["data"] = data_key
    files.write_json(record_path, r)
    runs[method] = r

  for r in runs.values():
    r["diagnosis"] = diagnose(r["result_file"], work / "data" / "test")
  from llama_jax.training import recipes as recipes_lib
  ft = recipes_lib.load(_recipe("finetune.py", work, scale, method="full"))
  timings["total_s"] = time.perf_counter() - started
  results = {
      "scale": scale, "work": str(work), "data": {k: v for k, v in manifest.items()
                                                 if k != "scale"} | {"scale": manifest["scale"]},
      "pretrain": pretrain,
      "finetune": {"steps": ft.steps, "batch": ft.batch_size, "seq_len": ft.seq_len,
                   "warmup_steps": ft.optim.warmup_steps, "schedule": ft.optim.schedule},
      "evaluation": {"task": "math", "num_beams": 1, "max_new_tokens": max_new_tokens,
                     "datasets": list(make_data.TEST_SETS)},
      "runs": runs, "timings": timings,
      "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                  "python": platform.python_version(), "load_start": load_start,
                  "load_end": os.getloadavg()},
  }
  out.mkdir(parents=True, exist_ok=True)
  files.write_json(out / "results.json", results)
  files.write_text(out / "results.md", table(results))
  png = plot(results, out / "results.png")
  say(f"[done] {timings['total_s']:.0f}s; wrote {out / 'results.json'}, {out / 'results.md'}"
      + (f", {png}" if png else " (no matplotlib: no plot)"))
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--work", default="runs/adapters_miniature",
                      help="data, runs, logs and caches (reused when finished)")
  parser.add_argument("--out", default=str(HERE), help="where results.json/.md/.png go")
  parser.add_argument("--smoke", action="store_true", help="toy sizes, for the CI test")
  parser.add_argument("--methods", default=",".join(METHODS),
                      help=f"comma-separated subset of {','.join(METHODS)}")
  parser.add_argument("--fresh", action="store_true", help="redo the fine-tunes")
  parser.add_argument("--split", choices=make_data.SPLITS, default="pairs",
                      help="what train and test never share (make_data.py): operand pairs or "
                      "numbers")
  args = parser.parse_args(argv)
  methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown or not methods:
    parser.error(f"--methods={args.methods!r}: unknown {unknown}; allowed {list(METHODS)}")
  run(Path(args.work), Path(args.out), "smoke" if args.smoke else "full", methods, args.fresh,
      args.split)


if __name__ == "__main__":
  main()
