"""Checks before any work: the memory a run's arrays need, and a problem's closed forms (eq 9,
eq 2, eq 1 at the run's batch sizes) finite, so that a run is refused at once rather than after
minutes of work or with NumPy's RuntimeWarnings."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["available_memory", "format_bytes", "check_memory", "check_range", "check_problem",
           "checked_closed_forms"]  # fmt: skip


def available_memory() -> int:
    """Bytes of memory available to a new allocation (MemAvailable on Linux, else physical)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 1 << 62


def format_bytes(n: float) -> str:
    """A byte count in decimal units, 3 significant digits.

    >>> format_bytes(2.5e9)
    '2.5 GB'
    """
    if not math.isfinite(n):
        return "unbounded"
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} EB"


def check_memory(nbytes: float, what: str) -> None:
    """Refuse a run whose arrays would need more memory than the machine has available:
    ValueError saying that ``what`` (e.g. "`dims` 1000") needs about ``nbytes``."""
    have = available_memory()
    if not nbytes <= have:
        raise ValueError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the {format_bytes(have)} "
                         "available")  # fmt: skip


def check_range(key: str, value: int, lo: int, hi: int) -> None:
    """Refuse an integer option outside [lo, hi] (sizes that would not fit in memory or time):
    ValueError naming the option as `key`, which a command turns into its flag.

    >>> check_range("seeds", 0, 1, 100)
    Traceback (most recent call last):
    ...
    ValueError: `seeds` must be >= 1, got 0
    """
    if value < lo:
        raise ValueError(f"`{key}` must be >= {lo}, got {value}")
    if value > hi:
        raise ValueError(f"`{key}` must be <= {hi}, got {value}")


def check_problem(problem: Any, batch_sizes: Sequence[float] = (1,)) -> dict:
    """Refuse (``ValueError``) a problem whose closed forms overflow or divide by zero at these
    batch sizes (values near 1e300, H = 0 along mu), without printing NumPy's RuntimeWarnings.
    Returns the closed forms it checked (``surgesim.theory.curves`` at ``batch_sizes``), so that a
    caller does not compute them again (at d = 10^7 each pass over the coordinates costs seconds)."""
    import numpy as np

    from . import theory

    def curves() -> tuple[dict, None]:
        with np.errstate(all="raise"):
            return theory.curves(np.asarray(batch_sizes, dtype=np.float64), problem.mu, problem.sigma,
                                 problem.hessian), None  # fmt: skip

    return checked_closed_forms(problem, curves)[0]


def checked_closed_forms(problem: Any, compute: Callable[[], tuple[dict, Any]],
                         errors: tuple[type[Exception], ...] = (FloatingPointError, OverflowError, ZeroDivisionError),
                         ) -> tuple[dict, Any]:  # fmt: skip
    """``compute()`` (the closed forms as a dict of arrays, and anything else), refused with one
    ``ValueError`` where mu vanishes, ``compute`` raises one of ``errors``, or a value is not finite."""
    import numpy as np

    if not np.any(problem.mu):
        raise ValueError("mu is zero in every coordinate: the expected gradient vanishes, so no learning rate "
                         "improves the loss and there is nothing to optimise; give a problem with mu != 0")  # fmt: skip
    try:
        values, extra = compute()
    except errors as exc:
        raise ValueError(f"the problem's closed forms are not finite ({exc}): mu, sigma and H must be of moderate "
                         "magnitude, and H must not vanish along mu") from None  # fmt: skip
    bad = sorted(k for k, v in values.items() if not np.all(np.isfinite(v)))
    if bad:
        raise ValueError(f"the problem's closed forms {', '.join(bad)} are not finite: mu, sigma and H must be of "
                         "moderate magnitude, and H must not vanish along mu")  # fmt: skip
    return values, extra
