"""Fine-tuning: the training loop, its checkpoints, the non-finite guard, events and run control."""
