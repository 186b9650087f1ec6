"""On-disk state of this project: training checkpoints with resume (`manager`, orbax) and
converted model checkpoints (`converted`: model_config.json + orbax params/)."""
