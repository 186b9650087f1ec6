"""The bottom layer every package may use: error types, the registry idiom, per-backend
compilation settings and atomic file writes. It imports nothing else from llama_jax."""
