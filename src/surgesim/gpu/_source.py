"""CUDA C source of the GPU kernels (compiled at first use by CuPy's NVRTC).

``RNG`` is ``surgesim.rng`` in CUDA C, bit for bit: SplitMix64 used as a keyed counter hash,
``mix64``, ``random_bits``, ``derive_key``, ``uniform`` (top 53 bits) and ``normal_pair``
(Box-Muller from words 2*pair and 2*pair + 1). uint64 is ``unsigned long long``, whose
multiplication and addition wrap modulo 2^64 exactly as NumPy's uint64 does. The integer functions
and ``uniform`` are exact, so their outputs are identical to the CPU's; ``normal_pair`` calls the
device's double-precision log/sqrt/cos/sin (a few ulp from the host's libm), so normals agree to
about 1e-15 relative. The functions compile as host code too (``SURGESIM_FN`` is ``static inline``
outside CUDA), which is how the tests check them on machines without a GPU.

``ONESTEP`` holds the one-step kernel (``surgesim.gpu.onestep``) and ``STREAMS`` the array
fillers (``surgesim.gpu.rng``).
"""

from __future__ import annotations

__all__ = ["RNG", "STREAMS", "ONESTEP", "WARPS_PER_BLOCK"]

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
// acc[2 + j] = (U'V)_j.
template <int K>
SURGESIM_FN void visit(const int mode, const int i, const float v, double* acc,
                       const double* __restrict__ mu, const double* __restrict__ h,
                       const double* __restrict__ U, float* __restrict__ row) {
    const double x = (double)v;
    acc[0] += mu[i] * x;
    if (mode == SURGESIM_MOMENTS) {
        acc[1] += h[i] * x * x;
#pragma unroll
        for (int j = 0; j < K; ++j) acc[2 + j] += U[(long long)i * K + j] * x;
    } else {
        row[i] = v;
    }
}

// One warp per trial t < n: key = keys[t] if use_keys, else derive_key(key_b, t0 + t); lane l
// draws the coordinates l, l + 32, ... with the counter layout of surgesim.kernels.onestep:
// SIGN word i; BATCH_MEAN element i % 2 of pair i / 2; PER_EXAMPLE normal j = i * B + e (e < B)
// from pair j / 2, summed in float32 in the order e = 0 .. B - 1 as the CPU kernel does.
// K = U.shape[1] (the low-rank factor's rank; 0 for diagonal H and in SIGNS mode).
template <int K>
__global__ void onestep_trials(const int mode, const int sampler, const u64 key_b, const u64 t0,
                               const u64* __restrict__ keys, const int use_keys,
                               const long long B, const int d, const long long n,
                               const double* __restrict__ mu, const double* __restrict__ sigma,
                               const u64* __restrict__ thr, const float* __restrict__ rare,
                               const double* __restrict__ h, const double* __restrict__ U,
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
            visit<K>(mode, i, random_bits(key, (u64)i) < thr[i] ? r : -r, acc, mu, h, U, row);
        }
    } else if (sampler == SURGESIM_BATCH_MEAN) {
        const double scale = 1.0 / sqrt((double)B);
        for (int q = lane; 2 * q < d; q += 32) {
            double z0, z1;
            normal_pair(key, (u64)q, &z0, &z1);
            const int i = 2 * q;
            visit<K>(mode, i, sign_of(mu[i] + sigma[i] * scale * z0), acc, mu, h, U, row);
            if (i + 1 < d)
                visit<K>(mode, i + 1, sign_of(mu[i + 1] + sigma[i + 1] * scale * z1), acc, mu, h, U, row);
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
            visit<K>(mode, i, sign_of((double)B * mu[i] + sigma[i] * (double)s), acc, mu, h, U, row);
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
