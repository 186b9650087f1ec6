"""Inference: batched autoregressive decoding with a KV cache (`generate`)."""
