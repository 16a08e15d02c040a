"""CUDA C source of the GPU kernels (compiled at first use by CuPy's NVRTC).

``RNG`` is ``surgesim.rng`` in CUDA C, bit for bit: SplitMix64 used as a keyed counter hash,
``mix64``, ``random_bits``, ``derive_key``, ``uniform`` (top 53 bits) and ``normal_pair``
(Box-Muller from words 2*pair and 2*pair + 1). uint64 is ``unsigned long long``, whose
multiplication and addition wrap modulo 2^64 exactly as NumPy's uint64 does. The integer functions
and ``uniform`` are exact, so their outputs are identical to the CPU's; ``normal_pair`` calls the
device's double-precision log/sqrt/cos/sin (a few ulp from the host's libm), so normals agree to
about 1e-15 relative. The functions compile as host code too (``SURGESIM_FN`` is ``static inline``
outside CUDA), and the tests run every kernel of this module on machines without a GPU through a
host emulation of CUDA (tests/cuda_emu: these strings compiled by g++, one fiber per CUDA thread).

``ONESTEP`` holds the one-step kernel (``surgesim.gpu.onestep``), ``STREAMS`` the array fillers
(``surgesim.gpu.rng``) and ``DYNAMICS`` the multi-step kernel (``surgesim.gpu.dynamics``).
"""

from __future__ import annotations

__all__ = ["RNG", "STREAMS", "ONESTEP", "DYNAMICS", "WARPS_PER_BLOCK"]

WARPS_PER_BLOCK = 8  # one-step kernel: one warp per trial, 8 trials per 256-thread block

RNG = r"""
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define SURGESIM_FN __device__ __forceinline__
#else
#define SURGESIM_FN static inline
#endif

typedef unsigned long long u64;

// Constants of surgesim.rng (tests parse these lines and compare them with the Python module).
#define SURGESIM_GAMMA 0x9E3779B97F4A7C15ULL
#define SURGESIM_M1 0xBF58476D1CE4E5B9ULL
#define SURGESIM_M2 0x94D049BB133111EBULL
#define SURGESIM_S30 30
#define SURGESIM_S27 27
#define SURGESIM_S31 31
#define SURGESIM_S11 11
#define SURGESIM_TWO_M53 1.1102230246251565e-16
#define SURGESIM_TWO_PI 6.283185307179586

// SplitMix64's finaliser (Stafford's variant 13): a bijection of uint64.
SURGESIM_FN u64 mix64(u64 z) {
    z = (z ^ (z >> SURGESIM_S30)) * SURGESIM_M1;
    z = (z ^ (z >> SURGESIM_S27)) * SURGESIM_M2;
    return z ^ (z >> SURGESIM_S31);
}

// Word `counter` of stream `key` (= output `counter` of SplitMix64 seeded with key).
SURGESIM_FN u64 random_bits(u64 key, u64 counter) {
    return mix64(key + (counter + 1ULL) * SURGESIM_GAMMA);
}

// Key of sub-stream `x` of stream `key`.
SURGESIM_FN u64 derive_key(u64 key, u64 x) {
    return mix64(key ^ mix64(x + SURGESIM_GAMMA));
}

// Top 53 bits as a double in [0, 1) (exact: the integer is below 2^53).
SURGESIM_FN double bits_to_uniform(u64 bits) {
    return (double)(bits >> SURGESIM_S11) * SURGESIM_TWO_M53;
}

SURGESIM_FN double uniform(u64 key, u64 counter) {
    return bits_to_uniform(random_bits(key, counter));
}

// Two standard normals (Box-Muller) from words 2*pair and 2*pair + 1.
SURGESIM_FN void normal_pair(u64 key, u64 pair, double* z0, double* z1) {
    const u64 c = pair * 2ULL;
    const double u1 = 1.0 - uniform(key, c);  // (0, 1]: log is finite
    const double u2 = uniform(key, c + 1ULL);
    const double r = sqrt(-2.0 * log(u1));
    const double t = SURGESIM_TWO_PI * u2;
    *z0 = r * cos(t);
    *z1 = r * sin(t);
}

// np.sign as float: +1, -1, or x itself for 0 and nan.
SURGESIM_FN float sign_of(double x) {
    return x > 0.0 ? 1.0f : (x < 0.0 ? -1.0f : (float)x);
}
"""

STREAMS = r"""
// kind 0: words, 1: uniforms (counters start + j); 2: normals (normal j from pair start + j / 2).
extern "C" __global__ void rng_fill(const int kind, const u64 key, const u64 start, const long long n,
                                    u64* __restrict__ words, double* __restrict__ values) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= n) return;
    if (kind == 0) {
        words[j] = random_bits(key, start + (u64)j);
    } else if (kind == 1) {
        values[j] = uniform(key, start + (u64)j);
    } else {
        double z0, z1;
        normal_pair(key, start + (u64)(j >> 1), &z0, &z1);
        values[j] = (j & 1) ? z1 : z0;
    }
}
"""

ONESTEP = r"""
#define SURGESIM_SIGN 0
#define SURGESIM_BATCH_MEAN 1
#define SURGESIM_PER_EXAMPLE 2
#define SURGESIM_MOMENTS 0  // mode: a and b = V'(diag(h) + U U')V
#define SURGESIM_SIGNS 1    // mode: a and the row V itself

// Fold coordinate i's sign v into the lane's partial sums: acc[0] = mu'V, acc[1] = sum h V^2,
// acc[2 + j] = (Ut V)_j, with the low-rank factor transposed: Ut (K, d), row-major.
template <int K>
SURGESIM_FN void visit(const int mode, const int i, const int d, const float v, double* acc,
                       const double* __restrict__ mu, const double* __restrict__ h,
                       const double* __restrict__ Ut, float* __restrict__ row) {
    const double x = (double)v;
    acc[0] += mu[i] * x;
    if (mode == SURGESIM_MOMENTS) {
        acc[1] += h[i] * x * x;
#pragma unroll
        for (int j = 0; j < K; ++j) acc[2 + j] += Ut[(long long)j * d + i] * x;
    } else {
        row[i] = v;
    }
}

// One warp per trial t < n: key = keys[t] if use_keys, else derive_key(key_b, t0 + t); lane l
// draws the coordinates l, l + 32, ... with the counter layout of surgesim.kernels.onestep:
// SIGN word i; BATCH_MEAN element i % 2 of pair i / 2; PER_EXAMPLE normal j = i * B + e (e < B)
// from pair j / 2, summed in float32 in the order e = 0 .. B - 1 as the CPU kernel does.
// K = Ut.shape[0] (the low-rank factor's rank; 0 for diagonal H and in SIGNS mode).
template <int K>
__global__ void onestep_trials(const int mode, const int sampler, const u64 key_b, const u64 t0,
                               const u64* __restrict__ keys, const int use_keys,
                               const long long B, const int d, const long long n,
                               const double* __restrict__ mu, const double* __restrict__ sigma,
                               const u64* __restrict__ thr, const float* __restrict__ rare,
                               const double* __restrict__ h, const double* __restrict__ Ut,
                               double* __restrict__ out_a, double* __restrict__ out_b,
                               float* __restrict__ out_v) {
    const long long t = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (t >= n) return;  // the whole warp leaves together
    const u64 key = use_keys ? keys[t] : derive_key(key_b, t0 + (u64)t);
    float* row = mode == SURGESIM_SIGNS ? out_v + t * (long long)d : out_v;
    double acc[K + 2];
#pragma unroll
    for (int j = 0; j < K + 2; ++j) acc[j] = 0.0;

    if (sampler == SURGESIM_SIGN) {
        for (int i = lane; i < d; i += 32) {
            const float r = rare[i];
            visit<K>(mode, i, d, random_bits(key, (u64)i) < thr[i] ? r : -r, acc, mu, h, Ut, row);
        }
    } else if (sampler == SURGESIM_BATCH_MEAN) {
        const double scale = 1.0 / sqrt((double)B);
        for (int q = lane; 2 * q < d; q += 32) {
            double z0, z1;
            normal_pair(key, (u64)q, &z0, &z1);
            const int i = 2 * q;
            visit<K>(mode, i, d, sign_of(mu[i] + sigma[i] * scale * z0), acc, mu, h, Ut, row);
            if (i + 1 < d)
                visit<K>(mode, i + 1, d, sign_of(mu[i + 1] + sigma[i + 1] * scale * z1), acc, mu, h, Ut, row);
        }
    } else {
        for (int i = lane; i < d; i += 32) {
            u64 j = (u64)i * (u64)B;
            const u64 end = j + (u64)B;
            float s = 0.0f;
            double z0, z1;
            if (j & 1ULL) {  // the first normal is the second element of its pair
                normal_pair(key, j >> 1, &z0, &z1);
                s = (float)((double)s + z1);
                ++j;
            }
            for (; j + 1 < end; j += 2) {
                normal_pair(key, j >> 1, &z0, &z1);
                s = (float)((double)s + z0);
                s = (float)((double)s + z1);
            }
            if (j < end) {
                normal_pair(key, j >> 1, &z0, &z1);
                s = (float)((double)s + z0);
            }
            // sign of the batch mean mu + sigma * sum(z) / B, i.e. of B mu + sigma * sum(z)
            visit<K>(mode, i, d, sign_of((double)B * mu[i] + sigma[i] * (double)s), acc, mu, h, Ut, row);
        }
    }

    // Warp tree reduction (fixed order: results are reproducible run to run).
    const int nv = mode == SURGESIM_MOMENTS ? K + 2 : 1;
#pragma unroll
    for (int j = 0; j < K + 2; ++j) {
        if (j < nv) {
            for (int off = 16; off > 0; off >>= 1) acc[j] += __shfl_down_sync(0xffffffffu, acc[j], off);
        }
    }
    if (lane == 0) {
        out_a[t] = acc[0];
        if (mode == SURGESIM_MOMENTS) {
            double b = acc[1];
#pragma unroll
            for (int j = 0; j < K; ++j) b += acc[2 + j] * acc[2 + j];
            out_b[t] = b;
        }
    }
}
"""

DYNAMICS = r"""
#define SURGESIM_OPT_SIGN 0
#define SURGESIM_OPT_ADAM 1
#define SURGESIM_OPT_SGD 2
#define SURGESIM_OPT_LION 3
#define SURGESIM_DIAG_LOWRANK 0
#define SURGESIM_DENSE 1
#define SURGESIM_DBL_MAX 1.7976931348623157e308

// Sum of x over the block, returned to every thread. scratch: 33 doubles of shared memory.
// blockDim.x is a multiple of 32; every thread of the block must call it.
__device__ double block_sum(double x, double* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int off = 16; off > 0; off >>= 1) x += __shfl_down_sync(0xffffffffu, x, off);
    if (lane == 0) scratch[warp] = x;
    __syncthreads();
    if (warp == 0) {
        double y = lane < n_warps ? scratch[lane] : 0.0;
        for (int off = 16; off > 0; off >>= 1) y += __shfl_down_sync(0xffffffffu, y, off);
        if (lane == 0) scratch[32] = y;
    }
    __syncthreads();
    return scratch[32];
}

// gm = H delta (p = U'delta in shared memory for low rank); returns 1/2 delta'H delta.
// Thread tid owns coordinates 2q and 2q + 1 for q = tid, tid + blockDim.x, ...
__device__ double refresh(const int kind, const int d, const double* __restrict__ h,
                          const double* __restrict__ ut, const int k, const double* __restrict__ hd,
                          const double* dt, double* gmt, double* p, double* scratch) {
    __syncthreads();  // every thread's last update of delta is visible
    const int half = (d + 1) / 2;
    if (kind == SURGESIM_DENSE) {
        const int lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
        for (int i = threadIdx.x >> 5; i < d; i += n_warps) {  // one warp per row of H
            const double* row = hd + (long long)i * d;
            double s = 0.0;
            for (int j = lane; j < d; j += 32) s += row[j] * dt[j];
            for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
            if (lane == 0) gmt[i] = s;
        }
        __syncthreads();
    } else {
        for (int c = 0; c < k; ++c) {
            const double* u = ut + (long long)c * d;
            double s = 0.0;
            for (int q = threadIdx.x; q < half; q += blockDim.x) {
                s += u[2 * q] * dt[2 * q];
                if (2 * q + 1 < d) s += u[2 * q + 1] * dt[2 * q + 1];
            }
            s = block_sum(s, scratch);
            if (threadIdx.x == 0) p[c] = s;
        }
        __syncthreads();
        for (int i = 2 * threadIdx.x; i < d; i += 2 * blockDim.x) {
            for (int e = i; e < i + 2 && e < d; ++e) {
                double g = h[e] * dt[e];
                for (int c = 0; c < k; ++c) g += ut[(long long)c * d + e] * p[c];
                gmt[e] = g;
            }
        }
    }
    double loss = 0.0;
    for (int q = threadIdx.x; q < half; q += blockDim.x) {
        loss += dt[2 * q] * gmt[2 * q];
        if (2 * q + 1 < d) loss += dt[2 * q + 1] * gmt[2 * q + 1];
    }
    return 0.5 * block_sum(loss, scratch);
}

// One optimizer step of coordinate i with the standard normal z (surgesim.kernels.dynamics).
__device__ __forceinline__ void update(const int opt, const double lr, const double c,
                                       const double b1, const double b2, const double eps,
                                       const double a1, const double a2, const double sigma,
                                       const double gm, const double z, double* delta, double* m,
                                       double* v) {
    const double g = gm + c * sigma * z;
    if (opt == SURGESIM_OPT_SIGN) {
        *delta -= g > 0.0 ? lr : (g < 0.0 ? -lr : 0.0);
    } else if (opt == SURGESIM_OPT_SGD) {
        *delta -= lr * g;
    } else if (opt == SURGESIM_OPT_ADAM) {
        const double mi = b1 * *m + (1.0 - b1) * g;
        const double vi = b2 * *v + (1.0 - b2) * g * g;
        *m = mi;
        *v = vi;
        *delta -= lr * (mi * a1) / (sqrt(vi * a2) + eps);
    } else {  // LION
        const double u = b1 * *m + (1.0 - b1) * g;
        *m = b2 * *m + (1.0 - b2) * g;
        *delta -= u > 0.0 ? lr : (u < 0.0 ? -lr : 0.0);
    }
}

// One block per trajectory t: the loop of surgesim.kernels.dynamics._run, with the same stopping
// rule, records and random numbers (normal of coordinate i at step s: element i % 2 of pair
// s * ceil(d / 2) + i / 2 of stream keys[t]). Every thread runs the same control flow on the
// block-wide loss; thread 0 writes the records of a reached target, all threads its delta_at row.
// Dynamic shared memory: (33 + k) doubles.
extern "C" __global__ void dynamics_run(
    const int kind, const double* __restrict__ h, const double* __restrict__ ut, const int k,
    const double* __restrict__ hd, const double* __restrict__ sigma, const u64* __restrict__ keys,
    const double* __restrict__ lr, const double* __restrict__ inv_sqrt_b, const int opt,
    const double b1, const double b2, const double eps, const double* __restrict__ targets,
    const int n_t, const long long further, const long long min_steps, const long long max_steps,
    const int d, double* delta, double* m, double* v, double* gm, long long* steps, double* loss_at,
    double* loss_after, double* delta_at, long long* n_steps, double* trace, const long long n_trace) {
    extern __shared__ double shared[];
    double* scratch = shared;
    double* p = shared + 33;
    const long long t = blockIdx.x;
    double* dt = delta + t * d;
    double* mt = m + t * d;
    double* vt = v + t * d;
    double* gmt = gm + t * d;
    const u64 key = keys[t];
    const double c = inv_sqrt_b[t];
    const double step_lr = lr[t];
    const int half = (d + 1) / 2;

    double loss = refresh(kind, d, h, ut, k, hd, dt, gmt, p, scratch);
    if (n_trace > 0 && threadIdx.x == 0) trace[t * n_trace] = loss;
    int j = 0;   // next target to reach
    int jf = 0;  // next reached target waiting for its further-steps loss
    long long s = 0;
    double pw1 = 1.0, pw2 = 1.0;
    while (true) {
        while (j < n_t && s <= max_steps && loss <= targets[j]) {
            if (threadIdx.x == 0) {
                steps[t * n_t + j] = s;
                loss_at[t * n_t + j] = loss;
            }
            for (int i = threadIdx.x; i < d; i += blockDim.x) delta_at[(t * n_t + j) * d + i] = dt[i];
            ++j;
        }
        // Every thread has recorded delta (striding over i) before any thread updates its pair of
        // it, and sees the steps that thread 0 recorded.
        __syncthreads();
        while (jf < j && steps[t * n_t + jf] + further == s) {
            if (threadIdx.x == 0) loss_after[t * n_t + jf] = loss;
            ++jf;
        }
        if (!(fabs(loss) <= SURGESIM_DBL_MAX)) break;  // inf or nan (no isfinite: NVRTC lacks it on some versions)
        if (s >= min_steps && jf == j && (j == n_t || s >= max_steps)) break;
        pw1 *= b1;
        pw2 *= b2;
        const double a1 = 1.0 / (1.0 - pw1), a2 = 1.0 / (1.0 - pw2);
        for (int q = threadIdx.x; q < half; q += blockDim.x) {
            double z0, z1;
            normal_pair(key, (u64)s * (u64)half + (u64)q, &z0, &z1);
            const int i = 2 * q;
            update(opt, step_lr, c, b1, b2, eps, a1, a2, sigma[i], gmt[i], z0, dt + i, mt + i, vt + i);
            if (i + 1 < d)
                update(opt, step_lr, c, b1, b2, eps, a1, a2, sigma[i + 1], gmt[i + 1], z1, dt + i + 1,
                       mt + i + 1, vt + i + 1);
        }
        ++s;
        loss = refresh(kind, d, h, ut, k, hd, dt, gmt, p, scratch);
        if (s < n_trace && threadIdx.x == 0) trace[t * n_trace + s] = loss;
    }
    if (threadIdx.x == 0) n_steps[t] = s;
}
"""
