"""Data shipped with surgesim: the StepLaw learning-rate x batch-size grid (``steplaw/``, with its
README giving the source and licence)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["steplaw_grid"]


def steplaw_grid() -> Path:
    """Path of ``dense_lr_bs_loss.csv``: 1,911 dense LM pre-training runs in 17 (N, D) groups
    (Li et al. 2025, arXiv:2503.04715, repository step-law/steplaw), for ``python -m sims.fit``.

    >>> steplaw_grid().name
    'dense_lr_bs_loss.csv'
    """
    return Path(str(resources.files(__name__) / "steplaw" / "dense_lr_bs_loss.csv"))
