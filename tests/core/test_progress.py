"""The progress bar: silent off a terminal, rate and ETA from an injected clock, resumed work
(`initial`) counted but not timed."""
import io

from llama_jax.core import progress


class Clock:
  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now


class Terminal(io.StringIO):
  def isatty(self):
    return True


def test_quiet_when_the_stream_is_not_a_terminal():
  stream = io.StringIO()
  with progress.Bar(10, "x", stream=stream) as bar:
    for _ in range(10):
      bar.update()
  assert stream.getvalue() == ""


def test_rate_and_eta_on_a_terminal():
  clock, stream = Clock(), Terminal()
  bar = progress.Bar(100, "dcis", unit="eval", stream=stream, clock=clock, min_interval=0)
  clock.now += 20
  bar.update(10, best="3.21")
  assert bar.rate == 0.5 and bar.eta == 180.0
  line = stream.getvalue().split("\r")[-1]
  assert line.startswith("dcis: [##")
  assert "10/100 eval  10% | 20s elapsed, ETA 3m00s, 0.50 eval/s | best=3.21" in line
  bar.close()
  assert stream.getvalue().endswith("\n")


def test_resumed_work_counts_but_does_not_speed_up_the_eta():
  clock = Clock()
  bar = progress.Bar(100, stream=Terminal(), clock=clock, initial=60)
  assert bar.eta != bar.eta  # nan: nothing timed yet
  clock.now += 10
  bar.update(5)
  assert bar.done == 65 and bar.rate == 0.5 and bar.eta == 70.0


def test_redraws_are_throttled():
  clock, stream = Clock(), Terminal()
  bar = progress.Bar(1000, stream=stream, clock=clock, min_interval=1.0)
  for _ in range(50):
    clock.now += 0.01
    bar.update()
  assert stream.getvalue().count("\r") == 1  # only the first draw
  clock.now += 1
  bar.update()
  assert stream.getvalue().count("\r") == 2


def test_format_seconds():
  assert [progress.format_seconds(s) for s in (0, 59.4, 61, 3599, 7500, float("nan"), -1)] == [
      "0s", "59s", "1m01s", "59m59s", "2h05m", "?", "?"]
