"""The benchmark model: a 34M-parameter LLaMA, float32, 8 x 512 tokens per step.

Used by `python -m llama_jax.bench` to compare the llama_jax train step with HF transformers +
torch AdamW on the same machine (and to sweep sequence lengths at a fixed token budget).

Command:   python -m llama_jax.bench --config=configs/bench_34m.py --out=/tmp/bench \
               --seq_lens=256,512,1024,2048
Hardware:  sized for a 2-core CPU (one step is ~800 GFLOP); runs unchanged on a GPU/TPU.
Expected (2-core AMD EPYC CPU, tcmalloc, one run; README "Benchmark" has the full sweep):
  impl          T     step s  tokens/s  MFU    vs HF
  xla_blocked   512   7.12    576       65.3%  1.03
  chunked       512   7.47    548       62.2%  0.98
  hf_torch      512   7.34    558       63.3%  1.00
  chunked       2048  9.86    416       56.4%  0.88   (peak memory 16k/8k = 1.87x: linear)
  The 512 ratio moves between runs with the machine (1.005-1.096x over six runs); compare rows of
  one run.
"""
from llama_jax.training import defaults as base

DEVICES = 1  # one device; the benchmark never shards


def get_config():
  c = base.get_config()
  c.model = base.model_fields(
      "tiny", vocab_size=8192, d_model=512, n_layers=8, n_heads=8, n_kv_heads=8, head_dim=64,
      ffn_dim=1408, norm_eps=1e-6, max_position_embeddings=2048, dtype="float32",
      param_dtype="float32", attention="auto", remat="none",
      # Unrolled: on CPU the layer scan's stacking of residuals costs ~7% of the step (measured).
      scan_layers=False)
  c.batch_size = 8
  c.seq_len = 512
  return c
