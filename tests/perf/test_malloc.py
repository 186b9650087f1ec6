"""The allocator helper: finding tcmalloc, reading LD_PRELOAD, and when a CLI restarts itself."""
import os
import subprocess
import sys

import pytest

from llama_jax.core.errors import UsageError
from llama_jax.perf import malloc


def test_find_tcmalloc_prefers_the_minimal_build(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  (tmp_path / "b" / "libtcmalloc.so.4").write_bytes(b"")
  (tmp_path / "b" / "libtcmalloc_minimal.so.4").write_bytes(b"")
  found = malloc.find_tcmalloc([str(tmp_path / "a"), str(tmp_path / "b")])
  assert found == str(tmp_path / "b" / "libtcmalloc_minimal.so.4")
  assert malloc.find_tcmalloc([str(tmp_path / "a")]) is None


def test_preloaded_reads_space_and_colon_separated_lists():
  lib = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"
  assert malloc.preloaded({"LD_PRELOAD": f"/x/libfoo.so:{lib}"}) == lib
  assert malloc.preloaded({"LD_PRELOAD": f"/x/libfoo.so {lib}"}) == lib
  assert malloc.preloaded({"LD_PRELOAD": "/x/libjemalloc.so.2"}) is None
  assert malloc.preloaded({}) is None


def test_ensure_checks_the_choice_and_leaves_system_alone(monkeypatch):
  with pytest.raises(ValueError, match="'jemalloc' is not one of"):
    malloc.ensure("jemalloc", "llama_jax.bench", ["x"])
  monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("system must not restart"))
  malloc.ensure("system", "llama_jax.bench", ["x"])


def test_ensure_without_tcmalloc_is_an_error_only_when_required(monkeypatch, capsys):
  monkeypatch.delenv("LD_PRELOAD", raising=False)
  monkeypatch.delenv(malloc._REEXEC_MARK, raising=False)
  monkeypatch.setattr(malloc, "find_tcmalloc", lambda: None)
  monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("nothing to restart with"))
  malloc.ensure("auto", "llama_jax.bench", ["x"])
  assert "apt install libtcmalloc-minimal4" in capsys.readouterr().err
  with pytest.raises(UsageError, match="--malloc=tcmalloc: tcmalloc not found"):
    malloc.ensure("tcmalloc", "llama_jax.bench", ["x"])


def test_ensure_restarts_the_module_with_the_library_preloaded(monkeypatch):
  monkeypatch.setenv("LD_PRELOAD", "/x/libfoo.so")
  monkeypatch.delenv(malloc._REEXEC_MARK, raising=False)
  monkeypatch.setattr(malloc, "find_tcmalloc", lambda: "/lib/libtcmalloc_minimal.so.4")
  calls = []
  monkeypatch.setattr(os, "execve", lambda exe, args, env: calls.append((exe, args, env)))
  malloc.ensure("auto", "llama_jax.bench", ["/path/bench.py", "--config=c.py", "--out=d"])
  (exe, args, env), = calls
  assert exe == sys.executable
  assert args == [sys.executable, "-m", "llama_jax.bench", "--config=c.py", "--out=d"]
  assert env["LD_PRELOAD"] == "/lib/libtcmalloc_minimal.so.4 /x/libfoo.so"
  # The restarted process must not restart again, even if the preload did not take.
  monkeypatch.setenv(malloc._REEXEC_MARK, "1")
  malloc.ensure("auto", "llama_jax.bench", ["x"])
  assert len(calls) == 1


@pytest.mark.skipif(malloc.find_tcmalloc() is None, reason="no tcmalloc installed here")
def test_a_restarted_process_runs_on_tcmalloc():
  # Real restart through execve: the child reports what it runs on.
  code = ("import sys; from llama_jax import malloc; "
          "malloc.ensure('tcmalloc', 'llama_jax.malloc', ['x']); print(malloc.describe())")
  env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", malloc._REEXEC_MARK)}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                       check=False)
  # ensure() re-executes `python -m llama_jax.malloc`, which prints the preloaded library.
  assert out.returncode == 0, out.stderr
  assert "tcmalloc" in out.stdout and "glibc" not in out.stdout
