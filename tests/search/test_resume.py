"""A search killed mid-way (SIGKILL, in a subprocess) resumes without redoing evaluations and
ends exactly where an uninterrupted search ends; the journal refuses other settings."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from llama_jax.core.errors import ConfigError
from llama_jax.search import driver, journal

TARGET = [0.9, 1.3, 1.1, 2.0, 2.6, 3.4, 3.1, 4.2]
OPTIONS = {"dcis": {}, "evolution": {"population": 8, "parents": 4, "mutations": 2,
                                     "crossovers": 2, "iterations": 12, "seed": 5}}


def objective(lam):
  return 2.0 + float(np.mean((np.asarray(lam) - np.asarray(TARGET)) ** 2))


SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    from llama_jax.search import driver
    from tests.search.test_resume import OPTIONS, objective

    def slow(lam):
      time.sleep(0.05)
      return objective(lam)

    driver.search(sys.argv[1], slow, np.ones(8), sys.argv[2], options=OPTIONS[sys.argv[1]],
                  factor=4.0, original_length=256, rope_theta=1e4, bar=False)
""")


def _search(method, out, fn):
  return driver.search(method, fn, np.ones(8), out, options=OPTIONS[method], factor=4.0,
                       original_length=256, rope_theta=1e4, bar=False)


def _lines(path):
  return path.read_text().count("\n") if path.exists() else 0


@pytest.mark.parametrize("method", ["dcis", "evolution"])
def test_killed_search_resumes_without_repeating_evaluations(tmp_path, method):
  out = tmp_path / "search"
  state = out / journal.STATE_FILE
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.Popen([sys.executable, "-c", SCRIPT, method, str(out)], cwd=root,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))
  deadline = time.time() + 120
  while _lines(state) < 30 and time.time() < deadline and proc.poll() is None:
    time.sleep(0.05)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert proc.returncode == -signal.SIGKILL, "the search finished before it could be killed"
  done = _lines(state) - 1  # minus the settings line
  assert done >= 29 and not (out / driver.SEARCH_FILE).exists()

  calls = []

  def counting(lam):
    calls.append(np.array(lam))
    return objective(lam)

  resumed = _search(method, out, counting)
  whole = _search(method, tmp_path / "whole", objective)
  assert resumed["replayed"] == done
  assert len(calls) == resumed["evaluations"] - done  # nothing evaluated twice
  entries = [json.loads(line) for line in state.read_text().splitlines()[1:]]
  assert len(entries) == whole["evaluations"]
  np.testing.assert_array_equal(np.asarray([e["factors"] for e in entries[done:]]),
                                np.asarray(calls))
  assert resumed["long_factor"] == whole["long_factor"]
  assert resumed["best_ppl"] == whole["best_ppl"]
  assert [h["ppl"] for h in resumed["history"]] == [h["ppl"] for h in whole["history"]]


def test_a_torn_last_line_is_dropped_and_cut(tmp_path):
  out = tmp_path / "s"
  _search("dcis", out, objective)
  state = out / journal.STATE_FILE
  lines = state.read_text().splitlines(keepends=True)
  state.write_text("".join(lines[:20]) + lines[20][:15])  # killed inside the 20th append
  calls = []
  record = _search("dcis", out, lambda lam: calls.append(1) or objective(lam))
  assert record["replayed"] == 19 and len(calls) == record["evaluations"] - 19
  assert all(json.loads(line) for line in state.read_text().splitlines())


def test_other_settings_are_refused_and_nothing_is_written(tmp_path):
  out = tmp_path / "s"
  _search("dcis", out, objective)
  before = (out / journal.STATE_FILE).read_text()
  with pytest.raises(ConfigError, match=r"different settings \(\['options'\]\)"):
    driver.search("dcis", objective, np.ones(8), out, options={"candidates": 5}, factor=4.0,
                  original_length=256, rope_theta=1e4, bar=False)
  with pytest.raises(ConfigError, match=r"different settings \(\['factor'\]\)"):
    driver.search("dcis", objective, np.ones(8), out, factor=8.0, original_length=256,
                  rope_theta=1e4, bar=False)
  assert (out / journal.STATE_FILE).read_text() == before
