"""Numba kernels: one-step sign moments (``onestep``) and multi-step dynamics (``dynamics``)."""

from . import dynamics, onestep
from .onestep import BATCH_MEAN, PER_EXAMPLE, SAMPLERS, SIGN, batch_key, trial_moments, trial_signs

__all__ = [
    "dynamics",
    "onestep",
    "BATCH_MEAN",
    "PER_EXAMPLE",
    "SAMPLERS",
    "SIGN",
    "batch_key",
    "trial_moments",
    "trial_signs",
]
