"""Training machinery: checkpoints, loops, early stopping, feature caching."""
