"""matplotlib figure builders: data in, Figure out (``onestep``: one-step theory; ``grid``: grid searches)."""

from .onestep import *  # noqa: F401,F403
