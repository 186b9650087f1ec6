"""Performance tools: the train step timed and analysed (`jax_step`), the HF + torch baseline
(`torch_step`), benchmark reports (`report`, `benchmark`), ahead-of-time memory planning
(`planning`) and the CPU allocator (`malloc`)."""
