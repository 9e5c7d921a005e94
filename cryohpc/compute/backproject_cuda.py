"""CUDA kernels for Fourier-slice insertion and extraction (CuPy RawModule).

Same grids, layout and arithmetic as the numba kernels of :mod:`backproject`, which are
their reference: accumulators are (G, G, G, 4) float32 (data re, data im, weight, zero),
trilinear corners are visited in the same order, and the CTF phase γ is formed in float64
as on the CPU. One thread handles one (particle, point): it reads the point's value
straight from the batch's rfft2 output, applies the centring sign, the shift phase and
the CTF it computes itself, and adds its 8 corners per symmetry operator with one float4
atomic add each (sm_90 and later; three float ones before), compiled to fire-and-forget
reductions. Nothing of size (particles × points) is ever materialised.

Insertion is bound by L2 atomic transactions, not DRAM bandwidth (an H100 does about 80 G
scattered atomic adds/s against 760 G coalesced): the vector atomic is one transaction
for three values, and insertion runs in z-slab passes whose planes fit the L2 cache.

Imported only where CuPy runs; every function here takes and returns CuPy arrays.
"""

from __future__ import annotations

from functools import cache

import cupy as cp
import numpy as np

from .backproject import CHANNELS

_SOURCE = r"""
struct Cell { int ix, iy, iz; float tx, ty, tz; };

// Lower corner of the cell holding R·(x, y, 0) and the offsets in it (R row-major 3x3).
__device__ __forceinline__ Cell locate(const float* __restrict__ R, float x, float y, int c) {
    float qx = R[0] * x + R[1] * y;
    float qy = R[3] * x + R[4] * y;
    float qz = R[6] * x + R[7] * y;
    float fx = floorf(qx), fy = floorf(qy), fz = floorf(qz);
    Cell cell;
    cell.ix = (int)fx + c; cell.iy = (int)fy + c; cell.iz = (int)fz + c;
    cell.tx = qx - fx; cell.ty = qy - fy; cell.tz = qz - fz;
    return cell;
}

// Calls f(voxel index, trilinear weight, z) for the 8 corners of a cell, in the numba
// kernels' order (z, then y, then x).
template <typename F>
__device__ __forceinline__ void for_corners(const Cell& k, int g, F f) {
    #pragma unroll
    for (int dz = 0; dz < 2; ++dz) {
        float wz = dz ? k.tz : 1.0f - k.tz;
        #pragma unroll
        for (int dy = 0; dy < 2; ++dy) {
            float wzy = wz * (dy ? k.ty : 1.0f - k.ty);
            size_t row = ((size_t)(k.iz + dz) * g + (k.iy + dy)) * g + k.ix;
            #pragma unroll
            for (int dx = 0; dx < 2; ++dx) f(row + dx, wzy * (dx ? k.tx : 1.0f - k.tx), k.iz + dz);
        }
    }
}

// Adds a point's corners whose z lies in [z_lo, z_hi) (the slab of this pass).
__device__ __forceinline__ void scatter(float* __restrict__ acc, int g, const Cell& k,
                                        float vr, float vi, float w, int z_lo, int z_hi) {
    for_corners(k, g, [&](size_t v, float wt, int z) {
        if (z < z_lo || z >= z_hi) return;
        float* a = acc + v * 4;
#if __CUDA_ARCH__ >= 900 && !defined(SCALAR_ATOMICS)
        atomicAdd(reinterpret_cast<float4*>(a), make_float4(wt * vr, wt * vi, wt * w, 0.0f));
#else
        atomicAdd(a, wt * vr);
        atomicAdd(a + 1, wt * vi);
        atomicAdd(a + 2, wt * w);
#endif
    });
}

// values (B, P) complex64 and weights (B, P) at points (gx, gy), rotations (B, 9).
extern "C" __global__ void scatter_values(float* acc, int g, const float2* __restrict__ values,
                                          const float* __restrict__ weights, const float* __restrict__ rots,
                                          const float* __restrict__ gx, const float* __restrict__ gy,
                                          int n_points) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n_points) return;
    size_t b = blockIdx.y;
    size_t i = b * n_points + p;
    float2 v = values[i];
    scatter(acc, g, locate(rots + 9 * b, gx[p], gy[p], g / 2), v.x, v.y, weights[i], 0, g);
}

// Per-particle parameters: one float64 row of PARAMS values per particle (particle_rows).
#define PARAMS 11
#define P_SIGN 0
#define P_SX 1
#define P_SY 2
#define P_HALF 3
#define P_DF_MEAN 4
#define P_DF_HALF_DIFF 5
#define P_COS2AZ 6
#define P_SIN2AZ 7
#define P_A 8       // -pi lambda, the s^2 coefficient per unit defocus
#define P_B 9       // 0.5 pi Cs lambda^3, the s^4 coefficient
#define P_OFFSET 10 // phase shift + asin(amplitude contrast)

// spec (B, box, box/2+1) complex64: unshifted rfft2 of the batch's images.
// Point p: integer frequency (kx[p], ky[p]) at row rows[p], column cols[p] of the image
// spectrum, grid position (gx[p], gy[p]); CTF terms s2, cos2, sin2 of its direction.
// rots (B, n_ops, 9): symmetry-equivalent rotations of each particle.
// acc (2, G, G, G, 4): the two half sets, half_stride floats apart. Only corners with grid
// z in [z_lo, z_hi) are added: the caller runs one pass per slab, so the lines a pass
// updates stay in L2 instead of going to DRAM for every atomic add.
extern "C" __global__ void insert_spectra(float* acc, long long half_stride, int g,
                                          const float2* __restrict__ spec, int box,
                                          const int* __restrict__ rows, const int* __restrict__ cols,
                                          const float* __restrict__ kx, const float* __restrict__ ky,
                                          const float* __restrict__ gx, const float* __restrict__ gy,
                                          const float* __restrict__ s2, const float* __restrict__ cos2,
                                          const float* __restrict__ sin2,
                                          const double* __restrict__ part, const float* __restrict__ rots,
                                          int n_ops, int n_points, int use_ctf, int z_lo, int z_hi) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n_points) return;
    size_t b = blockIdx.y;
    float x = gx[p], y = gy[p];
    const float* R = rots + b * n_ops * 9;
    bool in_slab = false;
    for (int k = 0; k < n_ops; ++k) {
        int iz = locate(R + 9 * k, x, y, g / 2).iz;
        in_slab |= iz + 1 >= z_lo && iz < z_hi;
    }
    if (!in_slab) return;
    const double* q = part + b * PARAMS;
    int half_w = box / 2 + 1;
    float2 v = spec[(b * box + rows[p]) * half_w + cols[p]];
    float fkx = kx[p], fky = ky[p];
    // image sign and the (-1)^(kx+ky) that moves the origin to the image centre
    float sgn = (float)q[P_SIGN] * ((((int)fkx + (int)fky) & 1) ? -1.0f : 1.0f);
    float phase = (float)(-2.0 * 3.141592653589793 / box) * ((float)q[P_SX] * fkx + (float)q[P_SY] * fky);
    float sp, cph;
    sincosf(phase, &sp, &cph);
    float vr = sgn * (v.x * cph - v.y * sp);
    float vi = sgn * (v.x * sp + v.y * cph);
    float w = 1.0f;
    if (use_ctf) {
        double ds2 = s2[p];
        double defocus = q[P_DF_MEAN] + q[P_DF_HALF_DIFF] * ((double)cos2[p] * q[P_COS2AZ]
                                                            + (double)sin2[p] * q[P_SIN2AZ]);
        double gamma = (q[P_A] * defocus + q[P_B] * ds2) * ds2 - q[P_OFFSET];
        float c = -sinf((float)gamma);
        vr *= c;
        vi *= c;
        w = c * c;
    }
    float* half = acc + (size_t)q[P_HALF] * (size_t)half_stride;
    for (int k = 0; k < n_ops; ++k)
        scatter(half, g, locate(R + 9 * k, x, y, g / 2), vr, vi, w, z_lo, z_hi);
}

// Trilinear values of a complex grid (G, G, G) at R·(gx, gy, 0): out (B, P).
extern "C" __global__ void extract_points(const float2* __restrict__ vol, int g, const float* __restrict__ rots,
                                          const float* __restrict__ gx, const float* __restrict__ gy,
                                          float2* out, int n_points) {
    int p = blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= n_points) return;
    size_t b = blockIdx.y;
    Cell k = locate(rots + 9 * b, gx[p], gy[p], g / 2);
    float sr = 0.0f, si = 0.0f;
    for_corners(k, g, [&](size_t v, float wt, int) {
        float2 s = vol[v];
        sr += wt * s.x;
        si += wt * s.y;
    });
    out[b * n_points + p] = make_float2(sr, si);
}

// The voxel (x, y, z) of an n^3 grid that thread i handles; false past the grid's end.
__device__ __forceinline__ bool grid_voxel(size_t i, int n, int& x, int& y, int& z) {
    if (i >= (size_t)n * n * n) return false;
    x = i % n; y = (i / n) % n; z = i / ((size_t)n * n);
    return true;
}

// Friedel completion of one or two half-set accumulators (m = G + 2 MARGIN per side),
// cropped to the n^3 grid of frequencies up to Nyquist: data (complex) and weights.
extern "C" __global__ void friedel_complete(const float* __restrict__ a, const float* __restrict__ b,
                                            int m, int n, float2* data, float* weight) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int x, y, z;
    if (!grid_voxel(i, n, x, y, z)) return;
    int lo = m / 2 - n / 2;
    int X = x + lo, Y = y + lo, Z = z + lo;
    int XM = (m - X) % m, YM = (m - Y) % m, ZM = (m - Z) % m;   // the voxel at -q
    size_t at = (((size_t)Z * m + Y) * m + X) * 4;
    size_t mate = (((size_t)ZM * m + YM) * m + XM) * 4;
    float re = a[at] + a[mate], im = a[at + 1] - a[mate + 1], w = a[at + 2] + a[mate + 2];
    if (b != nullptr) {
        re += b[at] + b[mate]; im += b[at + 1] - b[mate + 1]; w += b[at + 2] + b[mate + 2];
    }
    data[i] = make_float2(re, im);
    weight[i] = w;
}

// data / (weight + lambda) inside the Nyquist sphere less the unpaired planes k = -n/2
// (gridding.inside_nyquist), 0 outside, times (-1)^(x+y+z) so an unshifted inverse FFT
// of the result is the centred one (up to a known sign). n is even on the GPU.
extern "C" __global__ void divide_for_ifft(float2* data, const float* __restrict__ weight, float lam, int n) {
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    int x, y, z;
    if (!grid_voxel(i, n, x, y, z)) return;
    float kx = x - n / 2, ky = y - n / 2, kz = z - n / 2;
    float r2 = kx * kx + ky * ky + kz * kz;
    float lim = n / 2.0f;
    float2 d = data[i];
    bool inside = r2 <= lim * lim && x > 0 && y > 0 && z > 0;
    float f = inside ? ((x + y + z) & 1 ? -1.0f : 1.0f) / (weight[i] + lam) : 0.0f;
    data[i] = make_float2(d.x * f, d.y * f);
}
"""

THREADS = 256
N_PARAMS = 11  # columns of the per-particle parameter rows (PARAMS in the source)


VECTOR_ATOMICS = True  # False: three scalar atomic adds a corner, as on GPUs before sm_90


@cache
def _module(vector_atomics: bool) -> cp.RawModule:
    return cp.RawModule(code=_SOURCE, options=("-std=c++17",) + (() if vector_atomics else ("-DSCALAR_ATOMICS",)))


def _kernel(name: str) -> cp.RawKernel:
    return _module(VECTOR_ATOMICS).get_function(name)


def _f32(a) -> cp.ndarray:
    return cp.ascontiguousarray(cp.asarray(a, dtype=cp.float32))


def _blocks(n: int) -> int:
    return (n + THREADS - 1) // THREADS


def _grid(n_points: int, n_batch: int) -> tuple[int, int]:
    if n_batch > 65535:
        raise ValueError(f"at most 65535 particles per launch, got {n_batch}")
    return (_blocks(n_points), n_batch)


def scatter_values(acc: cp.ndarray, values, weights, rots, gx, gy) -> None:
    """acc (G, G, G, 4) += trilinear insertion of values (B, P) complex at R_b·(gx, gy, 0)."""
    b, p = values.shape
    if not (b and p):
        return
    if not (acc.flags.c_contiguous and acc.dtype == cp.float32 and acc.shape[-1] == CHANNELS):
        raise ValueError(f"accumulator must be a C-contiguous float32 CuPy array of {CHANNELS} channels")
    _kernel("scatter_values")(_grid(p, b), (THREADS,),
                              (acc, np.int32(acc.shape[0]),
                               cp.ascontiguousarray(cp.asarray(values, dtype=cp.complex64)), _f32(weights),
                               _f32(cp.asarray(rots).reshape(b, 9)), _f32(gx), _f32(gy), np.int32(p)))


def extract_points(volume_ft, rots, gx, gy) -> cp.ndarray:
    """Values (B, P) complex64 of a complex grid at R_b·(gx, gy, 0), trilinear."""
    vol = cp.ascontiguousarray(cp.asarray(volume_ft, dtype=cp.complex64))
    rots = _f32(cp.asarray(rots).reshape(-1, 9))
    b, p = len(rots), len(gx)
    out = cp.empty((b, p), cp.complex64)
    if b and p:
        _kernel("extract_points")(_grid(p, b), (THREADS,),
                                  (vol, np.int32(vol.shape[0]), rots, _f32(gx), _f32(gy), out, np.int32(p)))
    return out


def insert_spectra(acc: cp.ndarray, spec: cp.ndarray, box: int, points: dict, part: cp.ndarray,
                   rots: cp.ndarray, use_ctf: bool, slabs: list[tuple[int, int]] | None = None) -> None:
    """acc (2, G, G, G, 4) += the batch whose rfft2 is ``spec`` (B, box, box//2+1).

    ``points``: device arrays rows, cols (int32), kx, ky, gx, gy, s2, cos2, sin2 (float32);
    ``part`` (B, N_PARAMS) float64 rows from :func:`particle_rows`; ``rots`` (B, n_ops, 9);
    ``slabs``: the z ranges of the passes (:func:`z_slabs`; one pass over all by default).
    """
    b = spec.shape[0]
    p = len(points["gx"])
    if not (b and p):
        return
    g = acc.shape[1]
    for z_lo, z_hi in slabs or [(0, g)]:
        _kernel("insert_spectra")(
            _grid(p, b), (THREADS,),
            (acc, np.int64(acc[0].size), np.int32(g), spec, np.int32(box),
             points["rows"], points["cols"], points["kx"], points["ky"], points["gx"], points["gy"],
             points["s2"], points["cos2"], points["sin2"], part, rots, np.int32(rots.shape[1]), np.int32(p),
             np.int32(bool(use_ctf)), np.int32(z_lo), np.int32(z_hi)))


def z_slabs(g: int, slab_bytes: float | None) -> list[tuple[int, int]]:
    """Split the z planes of the two half-set grids (g³ voxels each) into passes whose
    planes together take at most ``slab_bytes`` (at least one plane each; None: one pass)."""
    if not slab_bytes:
        return [(0, g)]
    per_plane = 2 * g * g * CHANNELS * 4
    t = max(1, int(slab_bytes // per_plane))
    return [(z, min(g, z + t)) for z in range(0, g, t)]


MAX_PASSES = 48  # beyond this, threads that find their point outside the slab cost more than L2 saves
L2_SHARES = (1.0, 2.0, 4.0)  # slab sizes tried, as multiples of the L2 cache


def slabs_for(g: int, l2: int) -> list[tuple[int, int]]:
    """Slab passes for (g³) half-set grids: the smallest slab of ``L2_SHARES`` × the L2
    size that needs at most ``MAX_PASSES`` passes, else one pass. On an H100 (50 MB of L2):
    box 128 at padding 2 gets 11 passes (1.9x one pass, batches of 2048), box 256 43
    passes (1.15x), box 512 one (its planes are too large for slabs to stay in L2)."""
    for share in L2_SHARES:
        slabs = z_slabs(g, share * l2)
        if len(slabs) <= MAX_PASSES:
            return slabs
    return [(0, g)]


def l2_bytes() -> int:
    return int(cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["l2CacheSize"])


def friedel_complete(a: cp.ndarray, b: cp.ndarray | None, n: int) -> tuple[cp.ndarray, cp.ndarray]:
    """Data (n³ complex64) and weights (n³ float32) of ``a`` (+ ``b``) with Friedel mates added,
    cropped to the n³ grid up to Nyquist."""
    m = a.shape[0]
    data = cp.empty((n, n, n), cp.complex64)
    weight = cp.empty((n, n, n), cp.float32)
    _kernel("friedel_complete")((_blocks(n**3),), (THREADS,),
                                (a, b if b is not None else np.uint64(0), np.int32(m), np.int32(n), data, weight))
    return data, weight


def divide_for_ifft(data: cp.ndarray, weight: cp.ndarray, lam: float) -> None:
    """In place: data / (weight + λ) inside the Nyquist sphere, checkerboard-signed."""
    n = data.shape[0]
    _kernel("divide_for_ifft")((_blocks(n**3),), (THREADS,),
                               (data, weight, np.float32(lam), np.int32(n)))
