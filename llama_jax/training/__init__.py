"""Training: configuration defaults and validation, the optimizer, the train state and its
pure jitted step, hooks, metrics, workdirs and the loop that ties them together."""
