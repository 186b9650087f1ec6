"""Every command-line tool, as a new user meets it: bad inputs, --help, the README's commands.

The bad-input table runs each command in this process through `core.cli.main` (the same path
as `python -m llama_jax.<tool>`), so most cases fail in milliseconds, before any compilation.
Each must end with ONE stderr line `<tool>: error: ...` naming the value and what to do, exit 2
(usage) or 1 (failure), print no traceback, and leave every file as it was. Run with -s to see
the table (input -> message).
"""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from llama_jax import bench, convert, evaluate, generate, malloc, plan, train
from llama_jax.core import cli
from llama_jax.search import __main__ as search

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"train": train, "convert": convert, "generate": generate, "evaluate": evaluate,
         "bench": bench, "plan": plan, "malloc": malloc, "search": search}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, str]:
  """Inputs a user may point the tools at: good ones to combine with a bad one, and bad ones."""
  from configs import tiny
  from llama_jax.data import tokenizer as tokenizer_lib
  from llama_jax.model import llama as model_lib
  from llama_jax.model import spec as spec_lib
  from llama_jax.model.config import ModelConfig
  from llama_jax.training import workdir as workdir_lib
  root = tmp_path_factory.mktemp("inputs")
  text = "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 40
  tok = tokenizer_lib.train_tokenizer([text], 300, root / "tok.model")

  def checkpoint(name, vocab, tokenizer=None):
    cfg = ModelConfig(vocab_size=vocab, d_model=32, n_layers=1, n_heads=2, ffn_dim=64,
                      norm_eps=1e-5, max_position_embeddings=64)
    params = jax.tree.map(np.asarray, spec_lib.to_params(model_lib.init(cfg)))
    convert.save_converted(root / name, cfg, params, tokenizer=tokenizer)
    return str(root / name)

  out = {"root": str(root), "tok": tok.path,
         "ckpt": checkpoint("ckpt", 320, tok.path),  # keeps its tokenizer.model
         "ckpt_notok": checkpoint("ckpt_notok", 320),
         "ckpt_small": checkpoint("ckpt_small", 270)}  # fewer embeddings than tokenizer ids
  workdir = root / "empty_run"  # a training run that has not checkpointed yet
  workdir_lib.write_config(tiny.get_config(), workdir)
  out["empty_run"] = str(workdir)
  (root / "hf").mkdir()
  (root / "hf" / "config.json").write_text(json.dumps({"model_type": "llama"}))
  (root / "meta").mkdir()
  (root / "meta" / "params.json").write_text(json.dumps({"dim": 32}))
  (root / "garbage.model").write_bytes(bytes(range(256)) * 4)
  (root / "docs").mkdir()
  (root / "docs" / "binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" * 20)
  (root / "file.txt").write_text("a regular file\n")
  (root / "results").mkdir()
  (root / "results" / "broken.json").write_text("{not json")
  (root / "exists").mkdir()
  out.update({k: str(root / v) for k, v in (
      ("hf", "hf"), ("meta", "meta"), ("garbage", "garbage.model"), ("binary", "docs/*.txt"),
      ("file", "file.txt"), ("broken", "results/broken.json"), ("exists", "exists"))})
  out["new"] = str(root / "new")  # must never be created by a failing command
  return out


def snapshot(root: str) -> dict[str, tuple]:
  """Every path under `root` with its size and modification time."""
  found = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      p = os.path.join(directory, name)
      st = os.lstat(p)
      found[os.path.relpath(p, root)] = (st.st_size if name in files else -1, st.st_mtime_ns)
  return found


def run_in_process(tool: str, args: list[str], capsys) -> tuple[int, str, str]:
  capsys.readouterr()
  status = cli.main(TOOLS[tool].PROGRAM, [f"python -m llama_jax.{tool}", *args])
  out = capsys.readouterr()
  return status, out.out, out.err


# ------------------------------------------------------------------------------ bad inputs
USAGE, FAILURE = cli.USAGE, cli.FAILURE
W = "--workdir={new}"
DCIS = ["--method=dcis", "--checkpoint={ckpt}"]
# (tool, arguments with {fixture} paths, exit status, what the message must say)
CASES = [
    # train: everything is checked before any device work
    ("train", [W, "--config=configs/nope.py"], USAGE, r"--config=configs/nope.py: no such recipe"),
    ("train", [W, "--config=README.md"], USAGE, r"could not be loaded as a recipe: SyntaxError"),
    ("train", [W, "--config.stepz=3"], USAGE, r"override names no config key.*steps"),
    ("train", [W, "--config.steps=abc"], USAGE, r"--config.steps=abc.*invalid literal"),
    ("train", [W, "--config.optim.peak_lr=-1"], USAGE, r"optim.peak_lr=-1.0 must be > 0"),
    ("train", [W, "--config.model.rope.rope_type=foo"], USAGE, r"rope_type='foo'.*allowed"),
    ("train", [W, "--config.batch_size=6", "--config.grad_accum=4"], USAGE,
     r"batch_size=6 is not divisible by grad_accum=4"),
    ("train", [W, "--config.data.files={root}/none/*.txt"], USAGE, r"matches no file"),
    ("train", [W, "--config.data.tokenizer={garbage}"], USAGE,
     r"not a readable sentencepiece model"),
    ("train", [W, "--config.init_from={hf}"], USAGE, r"convert it first.*--from=hf"),
    ("train", ["--workdir={file}"], USAGE, r"--workdir=.*file.txt is a file, not a directory"),
    ("train", ["--workdir={file}/run"], USAGE, r"cannot be created: .*file.txt is a file"),
    ("train", ["--workdir=/proc/llama_jax_run"], USAGE,  # a file system nobody can write
     r"--workdir=/proc/llama_jax_run cannot be written: creating a directory in /proc fails"),
    ("train", [W, "--no_such_flag=1"], USAGE, r"unknown flag --no_such_flag"),
    ("train", [W, "--num_processes=2"], USAGE, r"go together"),
    ("train", [W, "stray"], USAGE, r"unexpected argument\(s\) \['stray'\]"),
    # convert
    ("convert", ["--src={ckpt}", "--dst={new}"], USAGE, r"--from is required"),
    ("convert", ["--from=gguf", "--src={ckpt}", "--dst={new}"], USAGE, r"--from=gguf"),
    ("convert", ["--from=hf", "--src={root}/nope", "--dst={new}"], FAILURE, r"does not exist"),
    ("convert", ["--from=hf", "--src={ckpt}", "--dst={exists}"], FAILURE, r"already exists"),
    ("convert", ["--from=hf", "--src={ckpt}", "--dst={new}"], FAILURE,
     r"config.json not found"),
    ("convert", ["--from=llama_jax", "--to=hf", "--src={ckpt}", "--dst={new}",
                 "--max_shard_size=lots"], USAGE, r"--max_shard_size='lots'"),
    ("convert", ["--from=llama_jax", "--src={ckpt}", "--dst={file}/x"], FAILURE,
     r"parent directory .*file.txt is not a directory"),
    ("convert", ["--from=llama_jax", "--to=hf", "--src={ckpt}", "--dst={new}",
                 "--tokenizer={root}/nope.model"], FAILURE, r"tokenizer .*nope.model does not"),
    # generate
    ("generate", ["--checkpoint={root}/nope", "--prompt=x"], FAILURE, r"nope does not exist"),
    ("generate", ["--checkpoint={hf}", "--prompt=x"], FAILURE,
     r"HF model directory.*convert it first"),
    ("generate", ["--checkpoint={meta}", "--prompt=x"], FAILURE, r"Meta checkpoint directory"),
    ("generate", ["--checkpoint={file}", "--prompt=x"], FAILURE, r"is a file, not a checkpoint"),
    ("generate", ["--checkpoint={empty_run}", "--prompt=x"], FAILURE,
     r"training workdir without checkpoints"),
    ("generate", ["--checkpoint={ckpt}", "--prompt=x", "--temperature=-1"], USAGE,
     r"--temperature=-1: -1.0 is not a non-negative number"),
    ("generate", ["--checkpoint={ckpt}", "--prompt=x", "--top_p=0"], USAGE,
     r"--top_p must be in \(0, 1\]"),
    ("generate", ["--checkpoint={ckpt}", "--prompt=x", "--max_new_tokens=0"], USAGE,
     r"--max_new_tokens=0"),
    ("generate", ["--checkpoint={ckpt}"], USAGE, r"--prompt is required"),
    ("generate", ["--checkpoint={ckpt}", "--prompt=x", "--temprature=1"], USAGE,
     r"unknown flag --temprature; did you mean --temperature"),
    ("generate", ["--checkpoint={ckpt}", "--prompt=x", "--tokenizer={garbage}"], FAILURE,
     r"not a readable SentencePiece model"),
    ("generate", ["--checkpoint={ckpt_notok}", "--prompt=x"], USAGE,
     r"--tokenizer is required: .*keeps no tokenizer.model"),
    ("generate", ["--checkpoint={ckpt_small}", "--prompt=x", "--tokenizer={tok}"], FAILURE,
     r"would index past the embedding table"),
    # evaluate
    ("evaluate", ["--task=ppl", "--out={new}"], USAGE, r"--task='ppl'; allowed"),
    ("evaluate", ["--task=perplexity", "--out={new}", "--checkpoint={ckpt}", "--files={binary}",
                  "--lengths=abc"], USAGE, r"lengths='abc'; allowed: a comma-separated list"),
    ("evaluate", ["--task=perplexity", "--out={new}", "--checkpoint={ckpt}", "--lengths=32",
                  "--files={root}/none/*.txt"], FAILURE, r"matches no file"),
    ("evaluate", ["--task=perplexity", "--out={new}", "--checkpoint={ckpt}", "--lengths=32",
                  "--files={binary}"], FAILURE, r"binary.txt is not UTF-8 text"),
    ("evaluate", ["--task=passkey", "--out={file}", "--checkpoint={ckpt}", "--lengths=64"],
     USAGE, r"--out=.*file.txt is a file"),
    ("evaluate", ["--task=passkey", "--out=/proc/llama_jax_results", "--checkpoint={ckpt}",
                  "--lengths=64"], USAGE, r"--out=/proc/llama_jax_results cannot be written"),
    ("evaluate", ["--task=passkey", "--out={new}", "--checkpoint={ckpt}", "--lengths=64",
                  "--rope_type=foo"], USAGE, r"rope_type='foo' is not a known RoPE method"),
    ("evaluate", ["--task=passkey", "--out={new}", "--checkpoint={ckpt}", "--lengths=64",
                  "--depths=1.5"], USAGE, r"depths=\[1.5\] must list fractions within"),
    ("evaluate", ["--task=passkey", "--out={new}", "--checkpoint={ckpt}", "--lengths=64",
                  "--files=x"], USAGE, r"\['--files'\] do not apply to --task=passkey"),
    ("evaluate", ["--task=passkey", "--out={new}", "--checkpoint={ckpt}", "--lengths=64",
                  "--rope_json={{bad"], USAGE, r"--rope_json=.* is neither a JSON object"),
    ("evaluate", ["--task=passkey", "--out={new}", "--checkpoint={hf}", "--lengths=64"],
     FAILURE, r"HF model directory"),
    ("evaluate", ["--task=plot", "--out={new}", "--results={root}/none/*.json"], USAGE,
     r"--results=.* matches no file"),
    ("evaluate", ["--task=plot", "--out={new}", "--results={broken}"], FAILURE,
     r"broken.json is not valid JSON"),
    # plan (--dry_run: nothing is compiled even when the inputs are good)
    ("plan", [], USAGE, r"--config is required"),
    ("plan", ["--config=configs/nope.py"], USAGE, r"no such recipe file; the recipes in"),
    ("plan", ["--config=configs/tiny.py", "--devices=0"], USAGE, r"--devices=0"),
    ("plan", ["--config=configs/tiny.py", "--mfu=2"], USAGE, r"--mfu must be in \(0, 1\]"),
    ("plan", ["--config=configs/yarn_7b.py", "--devices=64", "--config.mesh.fsdp=64",
              "--config.grad_accum=8", "--dry_run"], USAGE,
     r"micro-batch batch_size/grad_accum=64/8=8 is not divisible by .*fsdp=64"),
    ("plan", ["--config=configs/tiny.py", "--devices=8", "--config.mesh.data=3", "--dry_run"],
     USAGE, r"mesh .* has 3 devices but 8 are available"),
    ("plan", ["--config=configs/tiny.py", "--out={file}/plan.json"], USAGE,
     r"--out=.*plan.json cannot be written: .*file.txt is a file"),
    # bench (checked before it restarts under tcmalloc or compiles)
    ("bench", ["--config=configs/bench_34m.py", "--out={new}", "--seq_lens=abc"], USAGE,
     r"--seq_lens=abc: give positive integers"),
    ("bench", ["--config=configs/bench_34m.py", "--out={new}", "--impls=flash"], USAGE,
     r"--impls=flash: \['flash'\]; allowed"),
    ("bench", ["--config=configs/bench_34m.py"], USAGE, r"--out is required"),
    ("bench", ["--config=configs/bench_34m.py", "--out={file}"], USAGE, r"is a file"),
    # search (everything checked before the weights load)
    ("search", ["--method=beam", "--checkpoint={ckpt}", "--target_len=128", "--out={new}"],
     USAGE, r"--method='beam' is not a known search method; allowed: \['dcis', 'evolution'\]"),
    ("search", [*DCIS, "--target_len=128"], USAGE, r"--out is required"),
    ("search", ["--method=dcis", "--checkpoint={hf}", "--target_len=128", "--out={new}"],
     FAILURE, r"looks like an HF model directory, not a llama_jax checkpoint; convert it"),
    ("search", [*DCIS, "--files={root}/nothing*.txt", "--target_len=128", "--out={new}"],
     FAILURE, r"files='.*nothing\*.txt' matches no file"),
    ("search", [*DCIS, "--files={root}/*.model", "--target_len=128", "--out={new}"],
     FAILURE, r"garbage.model is not UTF-8 text"),
    ("search", [*DCIS, "--target_len=0", "--out={new}"], USAGE,
     r"--target_len=0 must be an integer >= 2"),
    ("search", [*DCIS, "--target_len=128", "--out={new}", "--candidates=1"], USAGE,
     r"--candidates=1 must be >= 2"),
    ("search", [*DCIS, "--target_len=128", "--out={new}", "--population=8"], USAGE,
     r"flag\(s\) \['--population'\] do not apply to --method=dcis"),
    ("search", [*DCIS, "--target_len=128", "--out={new}", "--init=nope.json"], USAGE,
     r"--init='nope.json': no such file"),
]


def _case_id(case):
  tool, args, _, _ = case
  return f"{tool} " + " ".join(a.replace("{", "").replace("}", "") for a in args)[:60]


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
def test_bad_input_ends_with_one_line(case, paths, capsys, monkeypatch):
  tool, args, want_status, want_message = case
  monkeypatch.chdir(ROOT)  # the README's relative configs/ paths
  args = [a.format(**paths) for a in args]
  before = snapshot(paths["root"])
  status, out, err = run_in_process(tool, args, capsys)
  lines = [line for line in err.splitlines() if line.strip()]
  print(f"\n[{status}] {tool} {' '.join(args).replace(paths['root'], '<tmp>')}\n"
        f"    -> {(lines[-1] if lines else '').replace(paths['root'], '<tmp>')}")
  assert "Traceback" not in err + out, err
  assert len(lines) == 1 and lines[0].startswith(f"{tool}: error: "), err
  assert re.search(want_message, lines[0]), lines[0]
  assert status == want_status, (status, lines[0])
  assert snapshot(paths["root"]) == before  # nothing written, moved or touched
  assert not os.path.exists(paths["new"])


def test_the_table_covers_every_tool_with_30_cases():
  assert len(CASES) >= 30
  assert {tool for tool, *_ in CASES} == set(TOOLS) - {"malloc"}  # malloc takes no input


def test_verbose_adds_the_traceback(paths, capsys):
  from llama_jax.core import logs
  try:
    status, _, err = run_in_process("generate", [f"--checkpoint={paths['hf']}", "--prompt=x",
                                                 "--verbose"], capsys)
  finally:
    logs.configure(verbose=False)  # third-party loggers back to WARNING for later tests
  assert status == cli.FAILURE and "Traceback" in err
  assert err.strip().splitlines()[-1].startswith("generate: error: ")


# ------------------------------------------------------------------------------ --help
def test_help_exits_0_with_user_facing_usage_for_every_tool():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = {tool: subprocess.Popen([sys.executable, "-m", f"llama_jax.{tool}", "--help"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for tool in TOOLS}
  for tool, proc in procs.items():
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (tool, err[-2000:])
    assert out.startswith(f"python -m llama_jax.{tool}"), (tool, out[:200])
    assert "options:" in out and "--verbose" in out, tool
    # No module docstring (developer prose), no absl boilerplate.
    assert "Try --helpfull" not in out and "absl" not in out and "`core.cli`" not in out, tool
    assert "Traceback" not in err, (tool, err)


def test_help_lists_each_flag_once_with_its_default():
  text = cli.help_text(generate.PROGRAM)
  assert text.count("--temperature=X") == 1 and "(default: 128)" in text
  assert "--checkpoint=VALUE\n      A training workdir or a converted checkpoint directory. " \
         "(required)" in text
  train_help = " ".join(cli.help_text(train.PROGRAM).split())
  assert "Any field can be overridden: --config.<field>=<value>" in train_help


# ------------------------------------------------------------------------------ README
def readme_commands() -> list[list[str]]:
  """Every `python -m llama_jax.*` command in README.md's code blocks (continuations joined;
  abbreviated ones, written with `...`, left out)."""
  blocks, current, language = [], None, None
  for line in (ROOT / "README.md").read_text().splitlines():
    if line.startswith("```"):
      if current is None:
        current, language = [], line[3:].strip()
      else:
        if language in ("", "bash", "sh", "console"):
          blocks.append("\n".join(current))
        current = None
    elif current is not None:
      current.append(line)
  commands = []
  for block in blocks:
    block = block.replace("\\\n", " ")
    for line in block.splitlines():
      line = line.split(" # ")[0].strip()
      if line.startswith("$ "):
        line = line[2:]
      m = re.search(r"python -m llama_jax\.\w+.*", line)
      if not m or " ... " in line + " ":
        continue
      commands.append(shlex.split(m.group(0).split(" && ")[0]))
  return commands


def test_readme_commands_run_as_written(tmp_path, capsys, monkeypatch):
  """Each README command parses as written; plan's run in their --dry_run form; the others
  either do their (cheap) job or stop at once with one line naming the input they lack."""
  commands = readme_commands()
  assert len(commands) >= 10 and any(c[2] == "llama_jax.plan" for c in commands)
  for command in commands:
    tool = command[2].split(".")[1]
    args = [a.replace("configs/", f"{ROOT}/configs/") for a in command[3:]]
    # Inputs the README names (checkpoints, data) do not exist here; run where nothing does.
    args = [a.replace("/tmp/llama_tiny", str(tmp_path / "llama_tiny")) for a in args]
    cli.parse(TOOLS[tool].PROGRAM, [tool, *args])  # flags, recipe file, overrides all valid
    if tool in ("bench",) or (tool == "train" and "tiny.py" in " ".join(args)):
      continue  # minutes of work: tests/perf and tests/training run them small
    monkeypatch.chdir(tmp_path)
    if tool == "plan":
      status, out, err = run_in_process(tool, [*args, "--dry_run"], capsys)
      assert status == 0 and "plan (dry run" in out, (command, err)
      continue
    status, out, err = run_in_process(tool, args, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status in (cli.USAGE, cli.FAILURE) and len(lines) == 1, (command, err)
    assert "Traceback" not in err and lines[0].startswith(f"{tool}: error: ")
    assert not list(tmp_path.iterdir()), (command, list(tmp_path.iterdir()))


def test_readme_plan_command_fits_grad_accum_to_the_mesh(capsys, monkeypatch):
  monkeypatch.chdir(ROOT)
  status, out, err = run_in_process("plan", ["--config=configs/yarn_7b.py", "--devices=64",
                                             "--config.mesh.fsdp=64", "--dry_run"], capsys)
  assert status == 0, err
  assert "grad_accum 8 -> 1: the recipe's micro-batch of 8 sequences cannot be split" in out
  assert "64 x 65536 tokens, grad_accum 1 (1 sequences per device per micro-batch)" in out


# ------------------------------------------------------------------------------ a small run
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> tuple[Path, list[str]]:
  """A 2-step training run through the CLI (in this process); returns its workdir and args."""
  import shutil
  import sysconfig
  root = tmp_path_factory.mktemp("run")
  corpus = root / "corpus"
  corpus.mkdir()
  stdlib = Path(sysconfig.get_paths()["stdlib"])
  for p in [p for p in sorted(stdlib.glob("*.py")) if 4_000 < p.stat().st_size < 16_000][:12]:
    shutil.copy(p, corpus / (p.stem + ".txt"))
  overrides = {
      "steps": 2, "optim.warmup_steps": 1, "batch_size": 8, "seq_len": 32, "log_every": 1,
      "eval_every": 0,
      "checkpoint_every": 1, "sample_tokens": 0, "model.vocab_size": 320, "model.d_model": 32,
      "model.n_layers": 1, "model.n_heads": 2, "model.n_kv_heads": 1, "model.ffn_dim": 64,
      "model.max_position_embeddings": 64, "data.files": str(corpus / "*.txt"),
      "data.cache_dir": str(root / "cache")}
  args = [f"--config={ROOT / 'configs' / 'tiny.py'}", f"--workdir={root / 'work'}",
          *(f"--config.{k}={v}" for k, v in overrides.items())]
  assert cli.main(train.PROGRAM, ["train", *args]) == 0
  return root / "work", args


def test_rerunning_a_finished_run_says_so_and_saves_nothing(trained_run, capsys):
  workdir, args = trained_run
  before = snapshot(str(workdir))
  status, out, err = run_in_process("train", args, capsys)
  assert status == 0, err
  assert ("done      the run was already complete at step 2 of 2; nothing was trained or "
          "saved (raise --config.steps to continue it)") in out
  assert "saved" not in out.replace("nothing was trained or saved", "") and "sample" not in out
  assert snapshot(str(workdir)) == before


def test_generate_from_a_run_is_quiet_and_warns_past_the_context(trained_run, capsys):
  workdir, _ = trained_run
  status, out, err = run_in_process("generate", [f"--checkpoint={workdir}", "--prompt=def f(",
                                                 "--max_new_tokens=4"], capsys)
  assert status == 0 and out.startswith("def f(") and err == "", err  # no orbax chatter
  status, out, err = run_in_process("generate", [f"--checkpoint={workdir}", "--prompt=def f(",
                                                 "--max_new_tokens=70"], capsys)
  assert status == 0, err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and re.match(
      r"warning: prompt \+ max_new_tokens length\(s\) \[7\d\] go past the model's "
      r"max_position_embeddings=64, with no RoPE scaling", lines[0]), err


def test_hf_export_of_a_run_carries_its_tokenizer_into_transformers(trained_run, tmp_path,
                                                                    capsys):
  """The README's `convert --from=workdir --to=hf`: the export loads in transformers, tokenizer
  included (offline, from the directory alone), and its ids are SentencePiece's."""
  import transformers

  from llama_jax.data import tokenizer as tokenizer_lib
  workdir, _ = trained_run
  dst = tmp_path / "export"
  status, out, err = run_in_process("convert", ["--from=workdir", "--to=hf", f"--src={workdir}",
                                                f"--dst={dst}"], capsys)
  assert status == 0, err
  assert "wrote tokenizer.model" in out and "wrote tokenizer_config.json" in out
  hf_tok = transformers.AutoTokenizer.from_pretrained(dst, local_files_only=True)
  ours = tokenizer_lib.Tokenizer(workdir / "tokenizer.model")
  texts = ["def add(a, b):\n    return a + b\n", "import os\n\n\nclass Point:\n\tx = 1  # tab",
           "The quick brown fox jumps over the lazy dog.", "émoji 🤖 and ünïcode"]
  for text in texts:
    ids = hf_tok(text)["input_ids"]
    assert ids == ours.encode(text, bos=True, eos=False), text
    assert hf_tok.decode(ids, skip_special_tokens=True) == text
  assert (hf_tok.bos_token_id, hf_tok.eos_token_id) == (ours.bos_id, ours.eos_id)
  pipe = transformers.pipeline("text-generation", model=str(dst), device="cpu")
  generated = pipe("def add(a, b):", max_new_tokens=4, do_sample=False)[0]["generated_text"]
  assert generated.startswith("def add(a, b):")
