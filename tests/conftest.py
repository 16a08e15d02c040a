"""Shared pytest configuration: Hypothesis profiles.

Profiles (choose with the environment variable HYPOTHESIS_PROFILE, default "ci"):
- "ci": few examples and derandomized, so the suite is fast and a CI run is reproducible.
- "dev": more examples, random, for local bug hunting.
- "thorough": many examples, for an occasional long run.

Every profile has deadline=None: the first call of a Numba function compiles it (seconds), which
must not count as a slow example.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=15, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=100, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
