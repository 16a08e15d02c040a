"""The warnings of a surge run (``python -m sims.surge``) for its user, worded once: batch sizes
that stopped short of ``--rel-se``, and a B_noise beyond Theorem 3's validity bound. Kept apart from
``surgesim.surge`` while that module is being edited; it belongs beside ``SurgeResult``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .surge import SurgeResult

__all__ = ["surge_warnings"]


def surge_warnings(result: SurgeResult) -> list[str]:
    """The ``warning:`` lines of ``result`` (``surgesim.surge.run_surge``'s), worded for the
    command line: its options are named as flags."""
    opts, notes = result.options, []
    if result.short:
        notes.append(f"--rel-se {opts.rel_se:g} was not reached at {len(result.short)} of {len(result.rows)} batch "
                     f"sizes (B = {', '.join(str(r['batch_size']) for r in result.short[:6])}"
                     f"{', ...' if len(result.short) > 6 else ''}): they stopped at --max-trials {opts.max_trials} "
                     f"with rel. s.e. up to {max(r['lr_mc_se'] / abs(r['lr_mc']) for r in result.short):.2g} "
                     "(converged = False in results.csv)")  # fmt: skip
    bn, bound = result.summary["noise_batch_size"], result.summary["validity_bound"]
    if result.summary["noise_batch_size_beyond_validity"]:
        notes.append(f"B_noise (eq 14) = {bn:.4g} exceeds the validity bound {bound:.4g}: the peak lies outside "
                     "Theorem 3's regime (B << bound), where eq 2 and eq 14 need not hold")  # fmt: skip
    return notes
