"""The train step's per-backend compilation: XLA options scoped to its jit, the loss layout."""
from llama_jax.core import compilation as compile_options
from llama_jax.perf import jax_step as bench_jax
from tests.training.test_step import CFG, optim_cfg


def _ynn_fusions(compilation):
  step = bench_jax.JaxStep(CFG, optim_cfg(), 2, 16, compilation=compilation)
  step.compile()
  return step.compiled.as_text().count("__ynn_fusion")


def test_cpu_steps_compile_without_ynnpack_fusions_unless_asked():
  """The step carries the CPU options: no YNNPACK fusion in it, while XLA's defaults (what
  `--step_compile=xla_defaults` benchmarks) make some."""
  assert _ynn_fusions(None) == 0
  assert _ynn_fusions(compile_options.DEFAULT) > 0


def test_settings_per_backend():
  cpu = compile_options.for_backend("cpu")
  assert cpu.vocab_chunk == compile_options.VOCAB_CHUNK
  assert cpu.xla_options == compile_options.CPU_XLA_OPTIONS
  assert compile_options.for_backend("gpu") == compile_options.DEFAULT
  assert compile_options.for_backend("tpu") == compile_options.DEFAULT


def test_rope_tables_are_computed_once_per_step():
  """cos/sin are evaluated once per step, not re-evaluated inside each fused RoPE application
  (every head, query and key, forward and backward, every layer). Unrolled layers: a layer
  scan already receives the tables as loop inputs."""
  step = bench_jax.JaxStep(CFG.replace(scan_layers=False), optim_cfg(), 2, 16)
  step.compile()
  hlo = step.compiled.as_text()
  assert CFG.n_layers >= 2
  assert hlo.count(" sine(") == 1 and hlo.count(" cosine(") == 1
