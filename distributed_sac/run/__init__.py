"""One run and its records: run directory, checkpoints, progress, W&B, evaluation, studies."""
