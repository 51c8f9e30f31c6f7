"""Training: data preparation, losses, and the generator training loop."""
