"""The one place that chooses where kernels run: ``cpu`` (Numba), ``gpu`` (CuPy) or ``auto``.

The rest of the library asks this module for a kernel set and never branches on the backend.
Both kernel sets draw the same counter-based random numbers (``surgesim.rng``), so a result does
not depend on the backend beyond floating-point rounding. Imports run one way: this module imports
``surgesim.gpu`` when the GPU is asked about, and ``surgesim.gpu`` never imports this module.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["resolve", "gpu_available", "onestep_kernels", "dynamics_kernels", "BackendUnavailable"]

BACKENDS = ("cpu", "gpu", "auto")


class BackendUnavailable(ValueError):
    """A backend asked for by name cannot run here (``backend``; ``reason``: why, and the fix)."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"the {backend} backend is unusable: {reason}")
        self.backend, self.reason = backend, reason


def gpu_available() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and sees a CUDA device (asked of ``surgesim.gpu``)."""
    from .gpu._runtime import available

    return available()


def resolve(name: str) -> str:
    """'cpu' or 'gpu' for a requested backend; ``BackendUnavailable`` (a ValueError) when 'gpu' is
    asked for and unusable."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "cpu":
        return "cpu"
    ok, why = gpu_available()
    if name == "gpu" and not ok:
        raise BackendUnavailable("gpu", why)
    return "gpu" if ok else "cpu"


def onestep_kernels(name: str) -> ModuleType:
    """The one-step kernel module of a resolved backend (same functions and signatures)."""
    if resolve(name) == "gpu":
        from .gpu import onestep as gpu_onestep

        return gpu_onestep
    from .kernels import onestep

    return onestep


def dynamics_kernels(name: str) -> ModuleType:
    """The multi-step dynamics kernel module of a resolved backend (same functions and signatures)."""
    if resolve(name) == "gpu":
        from .gpu import dynamics as gpu_dynamics

        return gpu_dynamics
    from .kernels import dynamics

    return dynamics
