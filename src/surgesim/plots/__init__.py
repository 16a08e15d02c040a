"""matplotlib figure builders: data in, Figure out (``onestep``: one-step theory; ``grid``: grid
searches; ``limits``: regime maps)."""

from .grid import *  # noqa: F403
from .limits import *  # noqa: F403
from .onestep import *  # noqa: F403
