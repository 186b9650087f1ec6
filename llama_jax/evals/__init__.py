"""Long-context evaluations: sliding-window / truncated perplexity, passkey retrieval, plots.

`perplexity` and `passkey` compute results as plain dicts (JSON-ready); `plots` draws them;
`io` writes them atomically. `python -m llama_jax.evaluate` is the command line around them.
"""
