"""Module-level task functions for tests/test_sweep.py: worker processes (process pools, Dask
workers, a killed subprocess) import them by name, so they cannot live inside the tests."""

from __future__ import annotations

import time

import numpy as np


def noisy_sum(params: dict) -> list[dict]:
    """Three rows of seeded Gaussian sums: floats with full 53-bit mantissas, so that any change
    in the bits of a result (a lossy store, a different seed) shows up as inequality."""
    rng = np.random.default_rng([params["seed"], params["x"]])
    time.sleep(params.get("sleep", 0.0))  # part of the task's identity: for completion order
    return [
        {"x": params["x"], "k": k, "value": float(rng.standard_normal(1000).sum()), "n": np.int64(1000)}
        for k in range(3)
    ]


def slow_noisy_sum(params: dict, shared: dict) -> list[dict]:
    """noisy_sum after sleeping shared["sleep"] seconds: the delay is not part of the task's
    identity, so a slow (killed) run and a fast rerun are the same sweep."""
    time.sleep(shared["sleep"])
    return noisy_sum(params)


def scaled(params: dict, shared: dict) -> dict:
    """One row using the sweep's shared object."""
    return {"x": params["x"], "y": params["x"] * shared["scale"]}


def fail_on_three(params: dict) -> dict:
    """Raises for x == 3, one row otherwise."""
    if params["x"] == 3:
        raise ValueError(f"x = {params['x']} is not allowed")
    return {"x": params["x"], "square": params["x"] ** 2}
