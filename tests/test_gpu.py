"""The GPU backend (``surgesim.gpu``).

Without a GPU (the project's machines and CI): the CUDA source's generator constants against
``surgesim.rng``, the source's generator functions compiled as host C++ and run against
``surgesim.rng`` and the published SplitMix64 outputs (skipped without a C++ compiler), the backend
choice and its errors, lazy imports, and argument checks that run before CuPy is needed.

The agreement tests take the ``gpu`` fixture (tests/conftest.py) and run twice: on the host
emulation of CUDA (tests/cuda_emu: the kernels' own CUDA source compiled by g++, one fiber per CUDA
thread, barriers and warp shuffles emulated, seeded scheduling jitter), on every machine; and on
CuPy with a GPU (marked ``gpu``: skipped without one, a failure under SURGESIM_REQUIRE_GPU=1).
They compare the device streams with the CPU streams, and the kernels with the CPU kernels on the
same seeds: every sampler and Hessian kind of the one-step kernel (sign patterns V identical), and
every optimizer and Hessian kind of the dynamics kernel at an odd d spanning several warps, every
output array including ``delta_at``. GPU only (``cupy`` fixture): the estimator on the GPU kernels
within 4 standard errors of the theory, the SGD loss against its exact recursion, and the whole
CUDA source compiled by nvcc.
"""

from __future__ import annotations

import ctypes
import inspect
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surgesim import Dense, Diagonal, DiagonalPlusLowRank, QuadraticProblem, backend, optimal_lr, rng
from surgesim.gpu import _runtime, _source
from surgesim.gpu import dynamics as gpu_dynamics
from surgesim.gpu import onestep as gpu_onestep
from surgesim.kernels import dynamics, onestep
from surgesim.kernels.dynamics import Optimizer

ROOT = Path(__file__).resolve().parents[1]

# First outputs of the reference SplitMix64 generator seeded with 0 (Vigna's splitmix64.c); word n
# of stream key 0 is output n.
SPLITMIX64_SEED0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F, 0xF88BB8A8724C81EC]


# ---------------------------------------------------------------- CPU side: the CUDA source


def _defines(code: str) -> dict[str, str]:
    return dict(re.findall(r"^#define (SURGESIM_\w+) (\S+)", code, flags=re.MULTILINE))


def test_cuda_source_has_the_constants_of_rng():
    c = _defines(_source.RNG)
    assert int(c["SURGESIM_GAMMA"].removesuffix("ULL"), 16) == int(rng.GAMMA)
    assert int(c["SURGESIM_M1"].removesuffix("ULL"), 16) == int(rng._M1)
    assert int(c["SURGESIM_M2"].removesuffix("ULL"), 16) == int(rng._M2)
    assert [int(c[f"SURGESIM_S{s}"]) for s in (30, 27, 31, 11)] == [
        int(rng._S30), int(rng._S27), int(rng._S31), int(rng._S11)
    ]  # fmt: skip
    # Decimal literals that must parse to exactly the same doubles (C and Python both round to
    # nearest when reading a literal).
    assert float(c["SURGESIM_TWO_M53"]) == rng._TWO_M53 == 2.0**-53
    assert float(c["SURGESIM_TWO_PI"]) == rng._TWO_PI
    assert float(_defines(_source.DYNAMICS)["SURGESIM_DBL_MAX"]) == np.finfo(np.float64).max
    # mix64 applies the shifts in rng's order: 30 with M1, 27 with M2, then 31.
    assert re.search(r"S30\)\) \* SURGESIM_M1;\s+z = \(z \^ \(z >> SURGESIM_S27\)\) \* SURGESIM_M2;"
                     r"\s+return z \^ \(z >> SURGESIM_S31\);", _source.RNG)  # fmt: skip


def test_sampler_codes_match_the_cpu_module():
    c = _defines(_source.ONESTEP)
    assert int(c["SURGESIM_SIGN"]) == onestep.SIGN
    assert int(c["SURGESIM_BATCH_MEAN"]) == onestep.BATCH_MEAN
    assert int(c["SURGESIM_PER_EXAMPLE"]) == onestep.PER_EXAMPLE


def test_optimizer_and_hessian_codes_match_the_cpu_module():
    c = _defines(_source.DYNAMICS)
    for name in ("SIGN", "ADAM", "SGD", "LION"):
        assert int(c[f"SURGESIM_OPT_{name}"]) == getattr(dynamics, name)
    assert int(c["SURGESIM_DIAG_LOWRANK"]) == dynamics.DIAG_LOWRANK
    assert int(c["SURGESIM_DENSE"]) == dynamics.DENSE


def test_gpu_run_trajectories_has_the_cpu_signature():
    def plain(f):
        return [(q.name, q.kind, q.default) for q in inspect.signature(f).parameters.values()]

    assert plain(gpu_dynamics.run_trajectories) == plain(dynamics.run_trajectories)


_HOST_HARNESS = r"""
#include <math.h>
%s
extern "C" {
void host_words(u64 key, u64 start, long long n, u64* out) {
    for (long long j = 0; j < n; ++j) out[j] = random_bits(key, start + (u64)j);
}
void host_uniforms(u64 key, u64 start, long long n, double* out) {
    for (long long j = 0; j < n; ++j) out[j] = uniform(key, start + (u64)j);
}
void host_normals(u64 key, u64 start_pair, long long n, double* out) {
    for (long long j = 0; j < n; ++j) {
        double z0, z1;
        normal_pair(key, start_pair + (u64)(j >> 1), &z0, &z1);
        out[j] = (j & 1) ? z1 : z0;
    }
}
void host_derive(const u64* keys, const u64* xs, long long n, u64* out) {
    for (long long j = 0; j < n; ++j) out[j] = derive_key(keys[j], xs[j]);
}
void host_sign(const double* x, long long n, float* out) {
    for (long long j = 0; j < n; ++j) out[j] = sign_of(x[j]);
}
}
"""


@pytest.fixture(scope="module")
def host_rng(tmp_path_factory):
    """The CUDA source's generator (``_source.RNG``) compiled as host C++, loaded with ctypes."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA generator source as host code")
    d = tmp_path_factory.mktemp("host_rng")
    (d / "rng.cpp").write_text(_HOST_HARNESS % _source.RNG)
    # -ffp-contract=off: no fused multiply-adds, as the kernels are compiled (--fmad=false).
    subprocess.run([cxx, "-O2", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(d / "rng.so"),
                    str(d / "rng.cpp")], check=True, capture_output=True)  # fmt: skip
    lib = ctypes.CDLL(str(d / "rng.so"))
    u64p = np.ctypeslib.ndpointer(np.uint64, flags="C_CONTIGUOUS")
    f64p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
    f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
    u64, i64 = ctypes.c_uint64, ctypes.c_longlong
    lib.host_words.argtypes = [u64, u64, i64, u64p]
    lib.host_uniforms.argtypes = [u64, u64, i64, f64p]
    lib.host_normals.argtypes = [u64, u64, i64, f64p]
    lib.host_derive.argtypes = [u64p, u64p, i64, u64p]
    lib.host_sign.argtypes = [f64p, i64, f32p]
    return lib


KEYS = [0, 1, 0x0123456789ABCDEF, 2**64 - 1]


def test_host_compiled_source_gives_the_published_splitmix64_outputs(host_rng):
    out = np.empty(4, np.uint64)
    host_rng.host_words(0, 0, 4, out)
    assert out.tolist() == SPLITMIX64_SEED0


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("start", [0, 12345, 2**64 - 3])  # the last wraps the counter around 2^64
def test_host_compiled_source_equals_rng_words_and_uniforms(host_rng, key, start):
    n = 64
    words, unif = np.empty(n, np.uint64), np.empty(n)
    host_rng.host_words(key, start, n, words)
    host_rng.host_uniforms(key, start, n, unif)
    expect = [int(rng.random_bits(np.uint64(key), np.uint64((start + j) % 2**64))) for j in range(n)]
    assert words.tolist() == expect  # integer arithmetic: exact
    np.testing.assert_array_equal(unif, [rng.uniform(np.uint64(key), np.uint64((start + j) % 2**64)) for j in range(n)])


def test_host_compiled_source_equals_rng_derive_key(host_rng):
    g = np.random.default_rng(0)
    keys = g.integers(0, 2**64, 200, dtype=np.uint64, endpoint=False)
    xs = np.concatenate([np.arange(100, dtype=np.uint64), g.integers(0, 2**64, 100, dtype=np.uint64)])
    out = np.empty(200, np.uint64)
    host_rng.host_derive(keys, xs, 200, out)
    assert out.tolist() == [int(rng.derive_key(k, x)) for k, x in zip(keys, xs)]


@pytest.mark.parametrize("key", KEYS)
def test_host_compiled_source_equals_rng_normals(host_rng, key):
    # Same formula on the same uniforms (exact); log, sqrt, cos, sin come from the host libm in
    # both, possibly by different code paths: allow a few ulp (rtol 1e-14, atol 1e-14 near 0).
    n, start = 1001, 77
    out = np.empty(n)
    host_rng.host_normals(key, start, n, out)
    np.testing.assert_allclose(out, rng.normals(key, n, start), rtol=1e-14, atol=1e-14)


def test_host_compiled_sign_is_numpy_sign(host_rng):
    x = np.array([2.5, -1e-300, 0.0, -0.0, np.inf, -np.inf, 1e-320, np.nan])
    out = np.empty(x.size, np.float32)
    host_rng.host_sign(x, x.size, out)
    np.testing.assert_array_equal(out, np.sign(x).astype(np.float32))


@pytest.mark.gpu
def test_cuda_source_compiles_with_nvcc(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH")
    # Taking the addresses of the template kernels instantiates them (NVRTC does it by name).
    instances = "void* surgesim_instances[] = {(void*)&onestep_trials<0>, (void*)&onestep_trials<3>};\n"
    code = _source.RNG + _source.STREAMS + _source.ONESTEP + _source.DYNAMICS + instances
    (tmp_path / "k.cu").write_text(code)
    r = subprocess.run([nvcc, "-c", "--fmad=false", "-Werror", "all-warnings", "-o", str(tmp_path / "k.o"),
                        str(tmp_path / "k.cu")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- CPU side: dispatch and errors


@pytest.fixture
def no_cupy(monkeypatch):
    """Make ``import cupy`` fail, as on a machine without CuPy."""
    monkeypatch.setitem(sys.modules, "cupy", None)
    _runtime.cupy.cache_clear()
    yield
    _runtime.cupy.cache_clear()


def test_resolve_gpu_without_cupy_is_a_clear_value_error(no_cupy):
    expected = r"gpu backend is unusable: CuPy is not installed \(pip install 'surgesim\[gpu\]'\)"
    with pytest.raises(ValueError, match=expected):
        backend.resolve("gpu")


def test_resolve_auto_falls_back_to_cpu(no_cupy):
    assert backend.resolve("auto") == "cpu"
    assert backend.onestep_kernels("auto") is onestep


def test_resolve_rejects_unknown_names():
    with pytest.raises(ValueError, match="backend must be one of cpu, gpu, auto, got 'cuda'"):
        backend.resolve("cuda")


def test_gpu_kernel_call_without_cupy_is_a_clear_import_error(no_cupy):
    p = _problem(6)
    thr, rare = onestep.sign_thresholds(4, p.mu, p.sigma)
    with pytest.raises(ImportError, match=r"needs CuPy \(pip install 'surgesim\[gpu\]'\)"):
        gpu_onestep.trial_signs(
            onestep.SIGN, 1, 0, 4, p.mu, p.sigma, thr, rare, np.empty(3), np.empty((3, 6), np.float32)
        )


def test_importing_surgesim_and_its_gpu_modules_does_not_import_cupy():
    code = ("import sys; sys.modules['cupy'] = None; import surgesim, surgesim.backend, surgesim.gpu.onestep, "
            "surgesim.gpu.rng; print('ok')")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_gpu_modules_do_not_import_the_backend_module():
    # Imports run one way: surgesim.backend imports surgesim.gpu (lazily), never the reverse.
    import ast

    for path in (ROOT / "src" / "surgesim" / "gpu").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [f"{'.' * node.level}{node.module or ''}"] + [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.split(".")[-1] == "backend" for n in names), (path.name, names)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"sampler": 3}, "sampler must be one of 0, 1, 2, got 3"),
        ({"B": 2.5}, "batch size must be an integer >= 1, got 2.5"),
        ({"sigma": np.ones(5)}, r"sigma must have shape \(6,\) like mu, got \(5,\)"),
        ({"Ut": np.ones((2, 5))}, r"h must be \(6,\) and Ut \(k, 6\), got \(6,\) and \(2, 5\)"),
        ({"out_b": np.empty(4)}, r"output must have shape \(3,\) and dtype float64, got \(4,\) float64"),
    ],
)
def test_gpu_arguments_are_checked_before_cupy_is_needed(no_cupy, change, message):
    p = _problem(6)
    thr, rare = onestep.sign_thresholds(4, p.mu, p.sigma)
    args = {"sampler": onestep.SIGN, "key_b": 1, "t0": 0, "B": 4, "mu": p.mu, "sigma": p.sigma,
            "thr": thr, "rare": rare, "h": p.hessian.h, "Ut": p.hessian.factor.T.copy(),
            "out_a": np.empty(3), "out_b": np.empty(3)}  # fmt: skip
    with pytest.raises(ValueError, match=message):
        gpu_onestep.trial_moments(**{**args, **change})


def test_gpu_dynamics_arguments_are_checked_before_cupy_is_needed(no_cupy):
    from surgesim.kernels import loop_arguments as la

    T, d, n_t = 3, 4, 2
    rows, per_target = np.zeros((T, d)), np.zeros((T, n_t))
    ok = la.LoopArguments(
        la.Quadratic(dynamics.DIAG_LOWRANK, np.ones(d), np.zeros((1, d)), np.zeros((0, 0)), np.ones(d), np.ones(d)),
        la.OptimizerConstants(dynamics.ADAM, 0.9, 0.99, 1e-8),
        la.RuleConstants(0, 0, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 0, 0.9, False, False),
        la.Horizon(np.ones(n_t), 0, 0, 10, 0),
        la.PerTrajectory(np.zeros(T, np.uint64), np.zeros(0, np.uint64), np.ones(T), np.ones(T), np.ones(T)),
        la.State(rows, rows.copy(), rows.copy(), *([None] * 8)),
        la.Records(np.zeros((T, n_t), np.int64), per_target, per_target.copy(), np.zeros((T, n_t, d)), None, None,
                   None, np.zeros(T, np.int64), np.zeros((T, 5)), None, None),
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"ut must have shape \(1, 4\), got \(1, 5\)"):
        gpu_dynamics._run(*ok._replace(quadratic=ok.quadratic._replace(ut=np.zeros((1, 5)))))
    with pytest.raises(ValueError, match=r"output must have shape \(3, 2\) and dtype int64, got \(3, 2\) float64"):
        gpu_dynamics._run(*ok._replace(records=ok.records._replace(steps=np.zeros((T, n_t)))))
    with pytest.raises(ValueError, match="unknown Hessian kind 0 or optimizer code 7"):
        gpu_dynamics._run(*ok._replace(optimizer=ok.optimizer._replace(code=7)))
    with pytest.raises(ImportError, match="needs CuPy"):  # valid arguments: now CuPy is needed
        gpu_dynamics._run(*ok)


@pytest.mark.parametrize(
    "command",
    [
        ["sims.surge", "--backend", "gpu", "--dims", "10", "--out", "{tmp}/out"],
        ["sims.bench_gpu", "--dims", "10", "--trials", "16"],
    ],
)
def test_gpu_commands_without_cupy_exit_2_with_one_line(tmp_path, command):
    fake = tmp_path / "site"  # a 'cupy' package that fails to import, first on the path
    (fake / "cupy").mkdir(parents=True)
    (fake / "cupy" / "__init__.py").write_text("raise ImportError('simulated: no CuPy here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)])}
    argv = [sys.executable, "-m"] + [c.format(tmp=tmp_path) for c in command]
    r = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    assert r.returncode == 2
    assert r.stderr.splitlines() == ["error: --backend gpu: CuPy is not installed (pip install 'surgesim[gpu]')"]
    assert "Traceback" not in r.stdout


# ---------------------------------------------------------------- the CUDA emulation itself (tests/cuda_emu)

_EMU_PROBES = r"""
extern "C" __global__ void shift(double* x, const int sync) {  // x[i] <- x[i + 1], n = blockDim.x - 1
    const int i = threadIdx.x;
    const double v = i + 1 < blockDim.x ? x[i + 1] : x[i];
    if (sync) __syncthreads();
    if (i + 1 < blockDim.x) x[i] = v;
}
extern "C" __global__ void shuffles(const double* x, double* out) {  // out: (4, blockDim.x)
    const int i = threadIdx.x, n = blockDim.x, lane = i & 31;
    out[i] = __shfl_down_sync(0xffffffffu, x[i], 3);
    out[n + i] = __shfl_xor_sync(0xffffffffu, x[i], 5);
    out[2 * n + i] = __shfl_sync(0xffffffffu, x[i], 31 - lane);
    out[3 * n + i] = __shfl_up_sync(0xffffffffu, x[i], 2);
}
extern "C" __global__ void block_ids(long long* out) {  // blockIdx, gridDim and atomics over blocks
    atomicAdd((unsigned long long*)out, (unsigned long long)(blockIdx.x + 1));
    if (threadIdx.x == 0) out[1 + blockIdx.x] = gridDim.x;
}
extern "C" __global__ void divergent_barrier(int unused) {
    if (threadIdx.x < 16) __syncthreads();
    else __syncthreads();
}
extern "C" __global__ void partial_mask(double* x) { x[threadIdx.x] = __shfl_down_sync(0xffffu, x[threadIdx.x], 1); }
extern "C" __global__ void deadlock(double* x) {
    if (threadIdx.x == 0) __syncthreads();
    else x[threadIdx.x] = __shfl_down_sync(0xffffffffu, x[threadIdx.x], 1);
}
"""


@pytest.fixture(scope="module")
def probes(cuda_emulator):
    return cuda_emulator.RawModule(code=_EMU_PROBES, options=_runtime.NVRTC_OPTIONS)


def _shift(emu, probes, sync: int, seed) -> np.ndarray:
    emu_jitter, emu.JITTER = emu.JITTER, seed
    try:
        x = emu.asarray(np.arange(128.0))
        probes.get_function("shift")((1,), (128,), (x, np.int32(sync)))
        return x.get()
    finally:
        emu.JITTER = emu_jitter


def test_emulator_jitter_exposes_a_race_that_index_order_hides(cuda_emulator, probes):
    expect = np.r_[np.arange(1.0, 128.0), 127.0]
    # Threads in index order: each reads x[i + 1] before thread i + 1 overwrites it, so the race
    # goes unseen; in a random order it does not, and the barrier makes every order right.
    np.testing.assert_array_equal(_shift(cuda_emulator, probes, 0, None), expect)
    assert any(not np.array_equal(_shift(cuda_emulator, probes, 0, seed), expect) for seed in range(3))
    for seed in range(3):
        np.testing.assert_array_equal(_shift(cuda_emulator, probes, 1, seed), expect)


def test_emulator_warp_shuffles_and_block_indices(cuda_emulator, probes):
    n = 64  # two warps: shuffles stay inside a warp
    x = np.random.default_rng(0).normal(size=n)
    out = cuda_emulator.empty((4, n))
    probes.get_function("shuffles")((1,), (n,), (cuda_emulator.asarray(x), out))
    lane = np.arange(n) % 32
    base = np.arange(n) - lane
    np.testing.assert_array_equal(out.get()[0], x[np.where(lane + 3 < 32, np.arange(n) + 3, np.arange(n))])
    np.testing.assert_array_equal(out.get()[1], x[base + (lane ^ 5)])
    np.testing.assert_array_equal(out.get()[2], x[base + 31 - lane])
    np.testing.assert_array_equal(out.get()[3], x[np.where(lane >= 2, np.arange(n) - 2, np.arange(n))])
    blocks = 37
    ids = cuda_emulator.zeros(1 + blocks, np.int64)
    probes.get_function("block_ids")((blocks,), (64,), (ids,))
    assert ids.get()[0] == 64 * blocks * (blocks + 1) // 2 and np.all(ids.get()[1:] == blocks)


@pytest.mark.parametrize(
    "kernel, message",
    [
        ("divergent_barrier", r"__syncthreads reached from lines \d+ and \d+ \(divergent barrier\)"),
        ("partial_mask", "partial mask"),
        ("deadlock", "deadlock"),
    ],
)
def test_emulator_reports_undefined_cuda(cuda_emulator, probes, kernel, message):
    arg = np.int32(0) if kernel == "divergent_barrier" else cuda_emulator.zeros(64)
    with pytest.raises(RuntimeError, match=message):
        probes.get_function(kernel)((2,), (64,), (arg,))


def test_emulator_checks_arguments_as_the_kernel_types_them(cuda_emulator, probes):
    shift = probes.get_function("shift")
    with pytest.raises(TypeError, match=r"expected a device array of f8, got ndarray"):
        shift((1,), (32,), (np.zeros(32), np.int32(1)))  # host memory
    with pytest.raises(TypeError, match=r"expected a C-contiguous f8 array, got float32"):
        shift((1,), (32,), (cuda_emulator.zeros(32, np.float32), np.int32(1)))
    with pytest.raises(TypeError, match=r"expected a i4 scalar, got int64"):
        shift((1,), (32,), (cuda_emulator.zeros(32), np.int64(1)))
    with pytest.raises(TypeError, match=r"expected a NumPy scalar of i4, got int"):
        shift((1,), (32,), (cuda_emulator.zeros(32), 1))
    with pytest.raises(ValueError, match="exceeds CUDA's limits"):
        shift((1,), (2048,), (cuda_emulator.zeros(2048), np.int32(1)))


# ---------------------------------------------------------------- kernels against the CPU (emulated and GPU)


def _problem(d: int, seed: int = 3, k: int = 3) -> QuadraticProblem:
    g = np.random.default_rng(seed)
    mu = g.normal(0, 0.3, d)
    mu[0] = 0.0  # a coordinate with no signal: P(V = +1) = 1/2
    H = DiagonalPlusLowRank(g.uniform(0.5, 2.0, d), g.normal(0, 0.4, (d, k)))
    return QuadraticProblem(mu, g.uniform(0.5, 2.0, d), H)


SAMPLERS = ["sign", "batch_mean", "per_example"]


@pytest.mark.parametrize("key", KEYS)
def test_device_streams_equal_cpu_streams(gpu, key):
    from surgesim.gpu import rng as grng

    n, start = 4099, 2**64 - 1000  # odd n; the counters wrap around 2^64
    words = [int(rng.random_bits(np.uint64(key), np.uint64((start + j) % 2**64))) for j in range(n)]
    assert grng.words(key, n, start).tolist() == words  # integer arithmetic: exact
    np.testing.assert_array_equal(grng.uniforms(key, n, 5), rng.uniforms(key, n, 5))  # exact conversion
    # Device log/sqrt/cos/sin are within a few ulp of the host libm: rtol 1e-12 (atol near 0).
    np.testing.assert_allclose(grng.normals(key, n, 123), rng.normals(key, n, 123), rtol=1e-12, atol=1e-12)


def _cpu_and_gpu_signs(p, sampler, B, t0, n, seed=11):
    key = onestep.batch_key(seed, B)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    code = onestep.SAMPLERS[sampler]
    out = []
    for mod in (onestep, gpu_onestep):
        a, V = np.empty(n), np.empty((n, p.dim), np.float32)
        mod.trial_signs(code, key, np.uint64(t0), B, p.mu, p.sigma, thr, rare, a, V)
        out.append((a, V))
    return out


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("B", [1, 3, 16])  # odd B: a per-example pair straddles two coordinates
def test_gpu_sign_patterns_equal_cpu(gpu, sampler, B):
    p = _problem(37)  # d = 37: two rounds of lanes, the second one partial
    (a_c, V_c), (a_g, V_g) = _cpu_and_gpu_signs(p, sampler, B, t0=7, n=203)  # 203: the last block partial
    if sampler == "sign":
        np.testing.assert_array_equal(V_g, V_c)  # integer words against integer thresholds: exact
    else:
        # Normals agree to ~1e-15 relative: a sign can differ only for a batch mean within that of
        # 0, probability ~1e-15 per coordinate; allow at most 1 of the 7,511 signs.
        assert np.count_nonzero(V_g != V_c) <= 1
    # float64 sums of the same terms in a different order: within 2 (d - 1) 2^-53 sum|mu|.
    tol = 2 * (p.dim - 1) * 2.0**-53 * np.abs(p.mu).sum()
    np.testing.assert_allclose(a_g[(V_g == V_c).all(axis=1)], a_c[(V_g == V_c).all(axis=1)], rtol=0, atol=tol)


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("k", [0, 3])  # diagonal H; diagonal + rank 3
def test_gpu_moments_agree_with_cpu(gpu, sampler, k):
    p = _problem(301, k=max(k, 1))
    h, Ut = p.hessian.h, np.ascontiguousarray(p.hessian.factor[:, :k].T)
    B, t0, n = 5, 1000, 203
    key = onestep.batch_key(4, B)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    code = onestep.SAMPLERS[sampler]
    a_c, b_c = np.empty(n), np.empty(n)
    onestep.trial_moments(code, key, np.uint64(t0), B, p.mu, p.sigma, thr, rare, h, Ut, a_c, b_c,
                          np.empty(((n + 15) // 16, p.dim), np.float32))  # fmt: skip
    a_g, b_g = np.empty(n), np.empty(n)
    gpu_onestep.trial_moments(code, key, np.uint64(t0), B, p.mu, p.sigma, thr, rare, h, Ut, a_g, b_g)
    # Same V (exact for sign; see the sign-pattern test for the others); float64 sums in another
    # order: a within 2 (d - 1) u sum|mu|; b = sum h V^2 + |Ut V|^2 within 4 d u (sum h + sum_j S_j^2),
    # S_j = sum_i |Ut_ji| (|Ut V|_j <= S_j), u = 2^-53.
    u = 2.0**-53
    np.testing.assert_allclose(a_g, a_c, rtol=0, atol=2 * (p.dim - 1) * u * np.abs(p.mu).sum())
    tol_b = 4 * p.dim * u * (h.sum() + (np.abs(Ut).sum(axis=1) ** 2).sum())
    np.testing.assert_allclose(b_g, b_c, rtol=0, atol=tol_b)


def test_gpu_dense_quadratic_forms_agree_with_cpu(gpu):
    p = _problem(301)
    H32 = p.hessian.to_dense().astype(np.float32)
    V = np.sign(np.random.default_rng(0).normal(size=(2 * onestep.DENSE_BLOCK + 100, p.dim))).astype(np.float32)
    b_c, b_g = onestep.quad_rows_f32(V, H32), gpu_onestep.quad_rows_f32(V, H32)
    # Two float32 GEMMs summing in different orders: each entry of VH within d 2^-24 sum_i |H_ij|,
    # so b within 2 d 2^-24 sum|H| (float64 row dots add nothing visible).
    np.testing.assert_allclose(b_g, b_c, rtol=0, atol=2 * p.dim * 2.0**-24 * np.abs(H32.astype(np.float64)).sum())


def test_gpu_functions_take_device_arrays_and_sample_signs_is_one_row(gpu):
    p = _problem(50)
    B, t0, n = 3, 40, 64
    key = onestep.batch_key(9, B)
    thr, rare = onestep.sign_thresholds(B, p.mu, p.sigma)
    a, V = np.empty(n), np.empty((n, p.dim), np.float32)
    gpu_onestep.trial_signs(onestep.SIGN, key, np.uint64(t0), B, p.mu, p.sigma, thr, rare, a, V)
    ad, Vd = gpu.empty(n), gpu.empty((n, p.dim), gpu.float32)
    dev = [gpu.asarray(x) for x in (p.mu, p.sigma, thr, rare)]
    gpu_onestep.trial_signs(onestep.SIGN, key, np.uint64(t0), B, *dev, ad, Vd)
    np.testing.assert_array_equal(Vd.get(), V)  # the same kernel on the same numbers: identical
    np.testing.assert_array_equal(ad.get(), a)
    row = np.empty(p.dim, np.float32)
    gpu_onestep.sample_signs(onestep.SIGN, rng.derive_key(key, np.uint64(t0 + 5)), B, p.mu, p.sigma, thr, rare, row)
    np.testing.assert_array_equal(row, V[5])


def test_bench_gpu_reports_rates_and_agreement(gpu, tmp_path, capsys):
    import json

    from sims import bench
    from sims.bench_gpu import CASES

    assert bench.main(["--backend", "gpu", "--dims", "64", "--trials", "64", "--repeat", "1",
                       "--out", str(tmp_path / "b.json")]) == 0  # fmt: skip
    report = json.loads((tmp_path / "b.json").read_text())["gpu"]
    assert "x dev" in capsys.readouterr().out
    assert len(report["cases"]) == len(CASES) and report["trials"] == 64
    for r in report["cases"]:
        assert r["cpu_samples_per_s"] > 0 and r["gpu_device_samples_per_s"] > 0
        # Same signs, so rounding only: a is a float64 sum in another order (<= 2 (d - 1) 2^-53 of
        # sum|mu|); mean(b) is float64 sums for low-rank H (1e-12) and float32 GEMMs for dense
        # (entries ~1e-7 relative, see quad_rows_f32: 1e-5 leaves a 100x margin).
        assert r["max_a_diff_over_sum_abs_mu"] <= 2 * 63 * 2.0**-53
        assert r["mean_b_rel_diff"] <= (1e-5 if r["hessian"] == "dense" else 1e-12)


def test_bench_gpu_states_the_low_rank_goal_at_large_d(capsys):
    from sims.bench_gpu import GOAL_DIMS, print_report

    row = {"sampler": "sign", "B": 64, "cpu_samples_per_s": 1e8, "gpu_io_samples_per_s": 1e9,
           "max_a_diff_over_sum_abs_mu": 0.0, "mean_b_rel_diff": 0.0, "ratio_io": 10.0}  # fmt: skip
    rows = [{**row, "hessian": "lowrank", "gpu_device_samples_per_s": 2.5e9, "ratio_device": 25.0},
            {**row, "hessian": "lowrank", "gpu_device_samples_per_s": 1.9e9, "ratio_device": 19.0}]  # fmt: skip
    report = {"device": "X", "cpu_threads": 2, "dims": GOAL_DIMS, "trials": 8, "cases": rows, "skipped": []}
    print_report(report)
    assert "goal (low-rank, d >= 100000): GPU >= 20x the 2-thread CPU rate on every case: NOT met (x 19.0 .. 25.0)" in (
        capsys.readouterr().out
    )
    print_report({**report, "cases": rows[:1]})
    assert ": met (x 25.0 .. 25.0)" in capsys.readouterr().out
    print_report({**report, "dims": GOAL_DIMS - 1})
    assert "goal" not in capsys.readouterr().out


OPTIMIZERS = [Optimizer("sign"), Optimizer("adam", 0.9, 0.999), Optimizer("sgd"), Optimizer("lion", 0.9, 0.99)]


@pytest.mark.parametrize("dense", [False, True], ids=["lowrank", "dense"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=lambda o: o.name)
def test_gpu_trajectories_follow_the_cpu_trajectories(gpu, dense, optimizer):
    # d = 301: 151 coordinate pairs on 160 threads (5 warps, the last one partly idle), an odd
    # tail, cross-warp reductions and dense rows spread over warps. Same streams; H delta and the
    # loss are float64 sums in another order (~1e-16 relative per step). Sign-based updates then
    # take the same signs (the same steps, delta equal to rounding); SGD and Adam at a stable
    # learning rate (lr 0.01 < 2 / lambda_max ~ 0.04) do not amplify the rounding: rtol 1e-9.
    # Every output is compared, delta_at (delta when a target is reached) included.
    p = _problem(301)
    H = p.hessian if not dense else Dense(p.hessian.to_dense())
    T = 4
    keys = np.array([dynamics.trajectory_key(5, 8, r) for r in range(T)], dtype=np.uint64)
    batch = np.array([8, 2, 32, 8])[:T]
    delta0 = np.linspace(-1.0, 1.0, p.dim)
    L0 = 0.5 * delta0 @ H.matvec(delta0)
    kw = dict(targets=[0.5 * L0, 0.3 * L0, 0.2 * L0], further_steps=5, max_steps=150, trace_steps=151)
    cpu = dynamics.run_trajectories(H, p.sigma, delta0, keys, 0.01, batch, optimizer, **kw)
    gpu_res = gpu_dynamics.run_trajectories(H, p.sigma, delta0, keys, 0.01, batch, optimizer, **kw)
    assert np.all(cpu.steps >= 1)  # every target reached (after at least one step): delta_at is tested
    np.testing.assert_array_equal(gpu_res.steps, cpu.steps)
    np.testing.assert_array_equal(gpu_res.n_steps, cpu.n_steps)
    for name in ("trace", "loss_at", "loss_after", "delta_at", "delta", "m", "v"):
        np.testing.assert_allclose(getattr(gpu_res, name), getattr(cpu, name), rtol=1e-9, atol=1e-12, err_msg=name)


def test_estimator_gives_the_same_numbers_on_both_backends(gpu):
    # Same trials and V; only float64 summation order differs: |a_gpu - a_cpu| <= 2 (d - 1) 2^-53
    # sum|mu| per trial while mean(a) ~ 0.06 sum|mu| at B = 64 (eq 35: erf(sqrt(B/2) snr)), so lr
    # agrees to <= 4e-13 relative: rel 1e-11; its s.e. (a variance of the same numbers) to 1e-9.
    from surgesim import estimate, surge_problem

    p = surge_problem(100, 2)
    cpu, gpu_res = (estimate.estimate_batch_size(p, 64, seed=1, trials=8192, backend=b) for b in ("cpu", "gpu"))
    assert gpu_res.trials == cpu.trials
    assert gpu_res.lr == pytest.approx(cpu.lr, rel=1e-11) and gpu_res.lr_se == pytest.approx(cpu.lr_se, rel=1e-9)


# ---------------------------------------------------------------- GPU only (statistical, large)


@pytest.mark.gpu
@pytest.mark.parametrize("dense", [False, True])
def test_estimator_on_the_gpu_backend_within_4_se_of_theory(cupy, dense):
    # The Monte Carlo optimal lr (eq 6) on the GPU kernels within 4 of its own standard errors of
    # eq 9 at each B.
    from surgesim import estimate, surge_problem

    p = surge_problem(200, 1, dense=dense)
    sizes = [1, 32, 300, 5000]
    exact = optimal_lr(sizes, p.mu, p.sigma, p.hessian)
    for r, x in zip(estimate.estimate_curve(p, sizes, seed=7, rel_se=0.02, backend="gpu"), exact):
        assert r.converged and math.isfinite(r.lr_se)
        assert abs(r.lr - x) <= 4 * r.lr_se, (r.batch_size, r.lr, x, r.lr_se)


@pytest.mark.gpu
def test_gpu_sgd_mean_loss_follows_the_exact_recursion(cupy):
    # SGD on H = diag(h): delta_i <- (1 - lr h_i) delta_i - lr sigma_i z_i / sqrt(B), so
    # E[delta_i^2] <- (1 - lr h_i)^2 E[delta_i^2] + lr^2 sigma_i^2 / B and E[L] = 1/2 sum h_i E[delta_i^2]
    # (an independent computation). The mean over T = 4096 trajectories is within 4 s.e. at each step.
    d, T, B, lr, steps = 16, 4096, 4, 0.1, 60
    g = np.random.default_rng(1)
    h, sigma, delta0 = g.uniform(0.5, 2.0, d), g.uniform(0.5, 1.5, d), g.normal(0, 1, d)
    keys = np.array([dynamics.trajectory_key(2, B, r) for r in range(T)], dtype=np.uint64)
    res = gpu_dynamics.run_trajectories(Diagonal(h), sigma, delta0, keys, lr, B, Optimizer("sgd"),
                                        min_steps=steps - 1, max_steps=steps - 1, trace_steps=steps)  # fmt: skip
    e2, exact = delta0**2, []
    for _ in range(steps):
        exact.append(0.5 * h @ e2)
        e2 = (1 - lr * h) ** 2 * e2 + lr**2 * sigma**2 / B
    mean, se = res.trace.mean(axis=0), res.trace.std(axis=0, ddof=1) / math.sqrt(T)
    # Step 0 is deterministic (se = 0): there only float64 rounding, 1e-12 relative.
    tol = np.maximum(4 * se, 1e-12 * np.asarray(exact))
    assert np.all(np.abs(mean - exact) <= tol), np.max(np.abs(mean - exact) / tol)
