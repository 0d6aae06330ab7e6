"""Training: the step, the Ray Train loop, checkpoints and monitoring."""
