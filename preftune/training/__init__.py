"""Training: the loop on accelerate, reference strategies, metrics, checkpoints, tracking."""
