"""The arena: fair, tuned comparison of optimizers on CPU workloads."""
