"""The LLaMA model: its configuration (`config`), the Flax NNX modules (`llama`), the
next-token loss (`loss`) and the per-run model spec (`spec`). Knows nothing of training."""
