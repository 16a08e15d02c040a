"""The one place where Numba options are set (numba-stats style)."""

from __future__ import annotations

import numba

# cache=True: compiled once per machine, reused across processes.
# error_model="numpy": division by zero gives inf/nan instead of raising inside kernels.
# fastmath without nnan/ninf: reductions may be reassociated and vectorised, but inf and nan keep
# their meaning. Each trial is computed by the same code whatever the thread count, so results
# stay bit-identical across threads.
FASTMATH = {"reassoc", "contract", "nsz", "arcp"}

jit = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH)
jit_inline = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH, inline="always")
jit_parallel = numba.njit(cache=True, error_model="numpy", fastmath=FASTMATH, parallel=True)
# IEEE arithmetic as NumPy's, operation by operation (no fastmath): a kernel that must give
# NumPy's values bit for bit (surgesim.kernels.hessian_products.off_diagonal_products)
jit_exact = numba.njit(cache=True, error_model="numpy")


def uncached_kernels(*modules: object) -> int:
    """How many of the modules' ``cache=True`` kernels are neither compiled in this process nor in
    Numba's on-disk cache yet (a first run after install spends most of its time compiling them)."""
    import os

    missing = 0
    for module in modules:
        for fn in vars(module).values():
            try:
                index = fn._cache._cache_file._index_path  # numba's cache index of a cache=True kernel
            except AttributeError:
                continue
            if not fn.signatures and not os.path.exists(index):
                missing += 1
    return missing
