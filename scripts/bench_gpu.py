#!/usr/bin/env python
"""GPU reconstruction figures, measured on the GPU at hand (bench_reconstruct.py prints
them first when a GPU is usable; run alone with --e2e-n 0 for the insertion figures only).

- Insertion at box 128 and 256: the CUDA kernel alone and the cuFFT transforms alone (CUDA
  events), the whole ``Reconstructor.insert`` from host arrays (pinned staging, copy, FFT,
  CTF, insertion; wall clock), the vectorised CuPy path it replaced, and the CPU numba
  kernel on the same particles (one core) -- beside two bounds: the accumulator traffic
  per particle (16-byte voxels read and written) over the measured copy bandwidth, and
  its 24 atomic float adds per point over the measured peak rate of atomic adds
  (coalesced, in L2); and what binds instead: the rate into randomly placed cells, the
  scatter with vector against scalar atomics, and z-slab passes sized to the L2 cache.
- Memory of a box 512 reconstruction at padding 2: the pool's peak against the estimate
  the job checks before it starts.
- End to end: simulate_particles then homo_reconstruct through the master on this GPU,
  with 1 rank and with 2 ranks sharing it: seconds from queue to result, and by phase.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from cryohpc.compute.geometry import random_rotations
from cryohpc.compute.gpu_budget import accumulator_bytes
from cryohpc.compute.reconstruct import CtfParams, Reconstructor

_ATOMICS = r"""
extern "C" __global__ void random_cells(float* acc, unsigned long long g, int cells_per_thread) {
    unsigned long long h = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x + 1) * 0x9E3779B97F4A7C15ull;
    unsigned long long inner = g - 1;
    for (int c = 0; c < cells_per_thread; ++c) {
        h ^= h >> 29; h *= 0xBF58476D1CE4E5B9ull; h ^= h >> 32;
        unsigned long long x = h % inner, y = (h / inner) % inner, z = (h / inner / inner) % inner;
        for (int dz = 0; dz < 2; ++dz)
            for (int dy = 0; dy < 2; ++dy)
                for (int dx = 0; dx < 2; ++dx) {
                    float* a = acc + (((z + dz) * g + y + dy) * g + x + dx) * 4;
                    atomicAdd(a, 1.0f); atomicAdd(a + 1, 1.0f); atomicAdd(a + 2, 1.0f);
                }
    }
}

// The atomic units' peak: consecutive threads, consecutive floats, an L2-resident array.
extern "C" __global__ void coalesced(float* acc, unsigned long long n, int reps) {
    unsigned long long t = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x;
    for (int r = 0; r < reps; ++r) atomicAdd(acc + (t + r * 4096ull) % n, 1.0f);
}

"""


def _events_seconds(cp, fn, repeat: int) -> float:
    fn()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1e3 / repeat


def copy_bandwidth(cp) -> float:
    """Bytes/s of a 2 GiB device-to-device copy, counting bytes read and written."""
    a = cp.ones(1 << 29, cp.float32)
    b = cp.empty_like(a)
    return 2 * a.nbytes / _events_seconds(cp, lambda: b.__setitem__(Ellipsis, a), 10)


def atomic_rate(cp, grid: int) -> float:
    """Atomic float adds per second into randomly placed 2x2x2 cells (3 of 4 channels each)
    of a (grid³, 4) accumulator: insertion's access pattern without its locality."""
    acc = cp.zeros((grid, grid, grid, 4), cp.float32)
    kernel = cp.RawKernel(_ATOMICS, "random_cells")
    threads, blocks, cells = 256, 4096, 16
    secs = _events_seconds(cp, lambda: kernel((blocks,), (threads,), (acc, np.uint64(grid), np.int32(cells))), 5)
    return threads * blocks * cells * 24 / secs


def peak_atomic_rate(cp) -> float:
    """Atomic float adds per second at best: coalesced, into an 8 MiB (L2-resident) array."""
    acc = cp.zeros(1 << 21, cp.float32)
    kernel = cp.RawKernel(_ATOMICS, "coalesced")
    threads, blocks, reps = 256, 8192, 64
    secs = _events_seconds(cp, lambda: kernel((blocks,), (threads,), (acc, np.uint64(acc.size), np.int32(reps))), 5)
    return threads * blocks * reps / secs


def atomics_experiment(cp, box: int) -> tuple[float, float]:
    """Particles/s of the scatter alone on 256 slices of a box's points: one float4 atomic
    add a corner (sm_90+), and three float ones (what older GPUs compile)."""
    from cryohpc.compute import backproject_cuda
    from cryohpc.compute.backproject import CHANNELS, grid_with_margin
    from cryohpc.compute.fourier import half_plane_points

    rng = np.random.default_rng(7)
    kx, ky = half_plane_points(box, box / 2)
    gx, gy = cp.asarray(2 * kx, cp.float32), cp.asarray(2 * ky, cp.float32)
    b, p, g = 256, len(kx), grid_with_margin(2 * box)
    vals = cp.asarray((rng.normal(size=(b, p)) + 1j * rng.normal(size=(b, p))).astype(np.complex64))
    wts = cp.asarray(rng.random((b, p)).astype(np.float32))
    rots = cp.asarray(random_rotations(b, rng).reshape(b, 9).astype(np.float32))
    acc = cp.zeros((g, g, g, CHANNELS), cp.float32)
    rates = []
    try:
        for vector in (True, False):
            backproject_cuda.VECTOR_ATOMICS = vector
            rates.append(b / _events_seconds(cp, lambda: backproject_cuda.scatter_values(acc, vals, wts, rots, gx, gy),
                                             10))
    finally:
        backproject_cuda.VECTOR_ATOMICS = True
    return rates[0], rates[1]


def batch(box: int, n: int, rng) -> tuple:
    imgs = rng.normal(size=(n, box, box)).astype(np.float32)
    df = rng.uniform(8000, 25000, n)
    ctf = CtfParams(df1_A=df + 300, df2_A=df - 300, df_angle_rad=rng.uniform(0, np.pi, n),
                    accel_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7), amp_contrast=np.full(n, 0.1),
                    phase_shift_rad=np.zeros(n))
    return imgs, random_rotations(n, rng), rng.normal(0, 2, (n, 2)), ctf, np.ones(n), np.arange(n) % 2


def insertion(box: int, n: int, bandwidth: float) -> dict:
    import cupy as cp

    from cryohpc.compute.gpu_budget import gpu_batch_size

    rng = np.random.default_rng(box)
    b = gpu_batch_size(box, 128)  # what homo_reconstruct uses on a GPU
    imgs, rots, shifts, ctf, sign, split = batch(box, b, rng)
    rec = Reconstructor(cp, box, 1.0)
    passes = len(rec.device.slabs)
    rec.insert(imgs[:8], rots[:8], shifts[:8], ctf.take(slice(0, 8)), sign[:8], split[:8])  # compile, plans
    cp.cuda.Device().synchronize()
    rec.device.times.marks.clear()
    t0, done = time.perf_counter(), 0
    while done < n:
        rec.insert(imgs, rots, shifts, ctf, sign, split)
        done += b
    cp.cuda.Device().synchronize()
    wall = time.perf_counter() - t0
    phases = rec.device.times.seconds()
    del rec
    old = Reconstructor(cp, box, 1.0, use_kernel=False)  # the vectorised CuPy path this replaced
    old.insert(imgs[:8], rots[:8], shifts[:8], ctf.take(slice(0, 8)), sign[:8], split[:8])
    cp.cuda.Device().synchronize()
    t0 = time.perf_counter()
    sl = slice(0, 256)
    for _ in range(4):
        old.insert(imgs[sl], rots[sl], shifts[sl], ctf.take(sl), sign[sl], split[sl])
    cp.cuda.Device().synchronize()
    old_rate = 4 * 256 / (time.perf_counter() - t0)
    del old
    cpu = Reconstructor(np, box, 1.0)
    m = 64 if box > 128 else 256
    cpu.insert(imgs[:4], rots[:4], shifts[:4], ctf.take(slice(0, 4)), sign[:4], split[:4])  # numba compile
    t0 = time.perf_counter()
    cpu.insert(imgs[:m], rots[:m], shifts[:m], ctf.take(slice(0, m)), sign[:m], split[:m])
    cpu_rate = m / (time.perf_counter() - t0)
    points = len(cpu.kx)
    grid = cpu.acc.shape[1]
    del cpu
    scattered = atomic_rate(cp, grid)
    vector, scalar = atomics_experiment(cp, box)
    return {"box": box, "points": points, "kernel": done / phases["insertion"], "fft": done / phases["fft"],
            "pipeline": done / wall, "vectorised": old_rate, "cpu": cpu_rate,
            "bw_bound": bandwidth / (points * 8 * 4 * 4 * 2), "scattered_atomics": scattered,
            "scatter_vector": vector, "scatter_scalar": scalar, "batch": b, "passes": passes}


def slab_sweep(box: int, shares=(None, 0.25, 0.5, 1.0, 2.0), batches=(256, 2048)) -> dict:
    """Kernel particles/s by the L2 share one slab pass may fill (None: one pass) and batch size."""
    import cupy as cp

    from cryohpc.compute.backproject_cuda import l2_bytes, z_slabs

    rng = np.random.default_rng(box + 1)
    imgs, rots, shifts, ctf, sign, split = batch(box, max(batches), rng)
    out = {}
    for share in shares:
        for b in batches:
            rec = Reconstructor(cp, box, 1.0)
            rec.device.slabs = z_slabs(rec.acc.shape[1], share and share * l2_bytes())
            rec.insert(imgs[:8], rots[:8], shifts[:8], ctf.take(slice(0, 8)), sign[:8], split[:8])
            cp.cuda.Device().synchronize()
            rec.device.times.marks.clear()
            n = 0
            while n < (8192 if box <= 128 else 4096):
                sl = slice(0, b)
                rec.insert(imgs[sl], rots[sl], shifts[sl], ctf.take(sl), sign[sl], split[sl])
                n += b
            out[share, b] = (n / rec.device.times.seconds()["insertion"], len(rec.device.slabs))
            del rec
    return out


def box512_memory() -> dict:
    import cupy as cp

    from cryohpc.compute.gpu_budget import device_bytes_needed

    pool = cp.get_default_memory_pool()
    pool.free_all_blocks()
    rng = np.random.default_rng(1)
    imgs, rots, shifts, ctf, sign, split = batch(512, 32, rng)
    t0 = time.perf_counter()
    rec = Reconstructor(cp, 512, 1.0, pad=2)
    rec.insert(imgs, rots, shifts, ctf, sign, split)
    maps = rec.finish()
    cp.cuda.Device().synchronize()
    seconds = time.perf_counter() - t0
    assert all(np.isfinite(m).all() for m in maps)
    peak = pool.total_bytes()
    del rec
    pool.free_all_blocks()
    return {"peak": peak, "estimate": device_bytes_needed(512, 2, 32), "seconds": seconds,
            "total": cp.cuda.runtime.memGetInfo()[1]}


def end_to_end(n: int, box: int, work: Path) -> list[dict]:
    from cryohpc.api import Api
    from cryohpc.master import master_in_thread

    api = Api.init(work / "home", work / "projects", poll_interval_s=0.05)
    rows = []
    with master_in_thread(api.instance):
        project = api.create_project("bench-gpu")
        sim = project.create_job("simulate_particles", params={
            "n_particles": n, "box": box, "psize_A": 1.5, "snr": 0.1, "compute_num_gpus": 1,
            "particles_per_stack": 5000, "seed": 1})
        t0 = time.perf_counter()
        sim.queue()
        assert sim.wait(3600).value == "completed", sim.model.errors_run
        rows.append({"what": f"simulate_particles {n:,} (GPU)", "seconds": time.perf_counter() - t0})
        for ranks in (1, 2):
            job = project.create_job("homo_reconstruct", params={
                "compute_num_ranks": ranks, "compute_num_gpus": 1, "batch_size": 512, "checkpoint_every_s": 0,
                "compute_share_gpus": ranks > 1})
            job.connect("particles", sim.uid, "particles")
            t0 = time.perf_counter()
            job.queue()
            assert job.wait(3600).value == "completed", (job.model.errors_run, (job.dir / "job.log").read_text()[-4000:])
            total = time.perf_counter() - t0
            times = job.model.status_times
            summary = next(g.summary for g in job.model.outputs if g.name == "volume")
            usage = job.model.runs[-1].usage  # what each rank reported of itself (cryohpc usage sums these)
            rows.append({"what": f"homo_reconstruct {n:,}, {ranks} rank(s) on 1 GPU", "seconds": total,
                         "worker": times["completed"] - times["started"], "phases": summary.get("seconds", {}),
                         "fsc": summary.get("fsc_0143_A"),
                         "usage": [(u.get("gpu_s", 0.0), u.get("gpu_peak_bytes", 0)) for u in usage]})
        rows.append(read_probe(sorted(sim.dir.glob("simulated/*.mrcs"))))
    return rows


def read_probe(stacks: list[Path]) -> dict:
    """How fast this machine gives back the simulated stacks: read_images in 512-image
    batches, by one thread and by four."""
    from concurrent.futures import ThreadPoolExecutor

    from cryohpc.compute.io_mrc import read_images, read_info

    jobs = [(s, np.arange(a, min(read_info(s).shape[0], a + 512)))
            for s in stacks for a in range(0, read_info(s).shape[0], 512)]
    out = {}
    for threads in (1, 4):
        t0 = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            nbytes = sum(x.nbytes for x in pool.map(lambda j: read_images(*j), jobs))
        out[threads] = nbytes / (time.perf_counter() - t0)
    return {"what": f"read_images of the {len(stacks)} stacks ({nbytes / 1e9:.1f} GB)", "seconds": 0.0,
            "read": out}


def report(e2e_n: int, box: int) -> None:
    import cupy as cp

    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    bw = copy_bandwidth(cp)
    peak = peak_atomic_rate(cp)
    print(f"GPU: {props['name'].decode()}, {props['multiProcessorCount']} SMs, L2 {props['l2CacheSize'] / 2**20:.0f} MiB; "
          f"measured copy bandwidth {bw / 1e12:.2f} TB/s; peak atomic adds {peak / 1e9:.0f} G/s (coalesced, in L2)")
    print(f"{'box':>4s} {'kernel':>10s} {'FFT':>10s} {'insert()':>10s} {'old CuPy':>10s} {'CPU numba':>10s} "
          f"{'bw bound':>10s} {'atomic bd':>10s} {'of bound':>9s}   particles/s")
    rows = []
    for b in (128, 256):
        r = insertion(b, 40000 if b == 128 else 10000, bw)
        rows.append(r)
        atomic_bound = peak / (r["points"] * 24)
        bound = min(r["bw_bound"], atomic_bound)
        print(f"{b:4d} {r['kernel']:10,.0f} {r['fft']:10,.0f} {r['pipeline']:10,.0f} {r['vectorised']:10,.0f} "
              f"{r['cpu']:10,.0f} {r['bw_bound']:10,.0f} {atomic_bound:10,.0f} {r['kernel'] / bound:9.1%}")
    for r in rows:
        print(f"box {r['box']}: batches of {r['batch']}, {r['passes']} slab pass(es); {r['points']:,} points/particle, "
              f"{r['kernel'] * r['points'] * 24 / 1e9:.0f} G atomic "
              f"adds/s achieved ({r['scattered_atomics'] / 1e9:.0f} G/s into random cells); scatter alone "
              f"{r['scatter_vector']:,.0f}/s with a float4 atomic a corner, {r['scatter_scalar']:,.0f}/s with three "
              "float ones")
    for b in (128, 256):
        sweep = slab_sweep(b)
        print(f"box {b} kernel particles/s by slab size (share of L2; passes) and batch: " + "; ".join(
            f"{'one pass' if share is None else share}{'' if share is None else f' ({passes})'} x{size}: {rate:,.0f}"
            for (share, size), (rate, passes) in sweep.items()))
    m = box512_memory()
    print(f"box 512, padding 2: peak {m['peak'] / 1e9:.1f} GB of {m['total'] / 1e9:.1f} GB "
          f"(estimate the job checks: {m['estimate'] / 1e9:.1f} GB); insert 32 + finish 3 maps {m['seconds']:.1f} s")
    if e2e_n:
        with tempfile.TemporaryDirectory() as tmp:
            for row in end_to_end(e2e_n, box, Path(tmp)):
                extra = ""
                if "read" in row:
                    print(f"{row['what']}: " + ", ".join(f"{t} thread(s) {r / 1e9:.2f} GB/s"
                                                          for t, r in row["read"].items()))
                    continue
                if "phases" in row:
                    extra = (f"; worker {row['worker']:.1f} s; FSC 0.143 {row['fsc']:.2f} Å; "
                             + ", ".join(f"{k} {v:.2f}" for k, v in row["phases"].items()))
                print(f"{row['what']}: {row['seconds']:.1f} s from queue to result{extra}")
                if "usage" in row:
                    acc = accumulator_bytes(box, pad=2)  # homo_reconstruct's default padding
                    print("  usage by rank: " + "; ".join(f"GPU {s:.1f} s, pool peak {b / 1e9:.2f} GB"
                                                         for s, b in row["usage"])
                          + f" (the two half-set accumulators: {acc / 1e9:.2f} GB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--e2e-n", type=int, default=100000, help="particles for the end-to-end run (0: none)")
    parser.add_argument("--box", type=int, default=128)
    args = parser.parse_args()
    if os.geteuid() == 0:  # the lent GPU machines run as root; Open MPI's mpiexec refuses it unless told
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    report(args.e2e_n, args.box)


if __name__ == "__main__":
    main()
