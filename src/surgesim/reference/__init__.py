"""Plain NumPy implementations of the kernels: the independent check in tests, the baseline in sims.bench."""
