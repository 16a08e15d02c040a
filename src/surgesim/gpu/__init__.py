"""Optional CuPy (CUDA) backend: the same kernels and the same random streams as the CPU.

- ``surgesim.gpu.onestep``: the one-step moments (``surgesim.kernels.onestep``'s functions).
- ``surgesim.gpu.dynamics``: multi-step optimizer runs (``surgesim.kernels.dynamics``'s
  ``run_trajectories``).
- ``surgesim.gpu.rng``: ``surgesim.rng``'s streams drawn on the device (words, uniforms, normals).

Choose it with ``surgesim.backend`` (``--backend gpu`` / ``auto`` in ``sims``), not by importing
it directly. Importing these modules never imports CuPy; the first kernel call does, and raises
ImportError when CuPy is missing or RuntimeError when no CUDA device is usable. Install with
``pip install 'surgesim[gpu]'`` (the ``cupy-cuda12x`` wheel; ``cupy-cuda13x`` for CUDA 13). This
package never imports ``surgesim.backend`` (the backend imports it).
"""

from . import dynamics, onestep, rng

__all__ = ["dynamics", "onestep", "rng"]
