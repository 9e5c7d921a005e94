"""The CUDA kernels give the numba kernels' answers. Runs where a GPU is usable (the
project's lent GPU machines); skips cleanly elsewhere.

The CPU kernels are the reference: same accumulator layout, same corner order, CTF phase
in float64 on both sides. Agreement is required to 1e-5 of the largest value."""

from __future__ import annotations

import numpy as np
import pytest

from cryohpc.compute.xp import cupy_usable

if not cupy_usable():
    pytest.skip("no usable GPU (CuPy with a CUDA device)", allow_module_level=True)

import cupy  # noqa: E402
from conftest import ThreadMaster, random_slices  # noqa: E402

from cryohpc.compute import backproject_cuda  # noqa: E402
from cryohpc.compute.backproject import CHANNELS, extract_slices, insert_slices  # noqa: E402
from cryohpc.compute.backproject_cuda import z_slabs  # noqa: E402
from cryohpc.compute.geometry import random_rotations  # noqa: E402
from cryohpc.compute.gpu_budget import accumulator_bytes  # noqa: E402
from cryohpc.compute.phantom import phantom  # noqa: E402
from cryohpc.compute.project import Projector  # noqa: E402
from cryohpc.compute.reconstruct import CtfParams, Reconstructor  # noqa: E402
from cryohpc.compute.symmetry import symmetry_matrices  # noqa: E402

TOL = 1e-5  # of the largest magnitude


def close(ref: np.ndarray, got: np.ndarray) -> float:
    """Largest difference as a fraction of the reference's largest magnitude."""
    return float(np.abs(ref - got).max() / np.abs(ref).max())


@pytest.mark.parametrize("vector_atomics", [True, False])
def test_scatter_and_gather_kernels_match_numba_kernels(vector_atomics, monkeypatch):
    """Both forms of the corner update: one float4 atomic (sm_90+) and three float ones
    (what GPUs before Hopper compile), on the same 16-byte voxels."""
    monkeypatch.setattr(backproject_cuda, "VECTOR_ATOMICS", vector_atomics)
    rng = np.random.default_rng(0)
    g, b, p = 40, 16, 700
    kx, ky, rots, vals, wts = random_slices(rng, b, p, radius=17.9)
    cpu = np.zeros((g, g, g, CHANNELS), np.float32)
    insert_slices(np, cpu, vals, wts, rots, kx, ky)
    gpu = cupy.zeros((g, g, g, CHANNELS), cupy.float32)
    insert_slices(cupy, gpu, cupy.asarray(vals), cupy.asarray(wts), rots, kx, ky)
    assert close(cpu, gpu.get()) < TOL
    assert float(gpu[..., 2].sum()) == pytest.approx(float(wts.sum()), rel=1e-5)  # trilinear weights sum to one
    assert not gpu[..., 3].any()  # the fourth channel stays zero
    # the gather reads the complex grid the scatter filled
    got = extract_slices(cupy, gpu[..., 0] + 1j * gpu[..., 1], rots, kx, ky).get()
    ref = extract_slices(np, (np.ascontiguousarray(cpu[..., 0]), np.ascontiguousarray(cpu[..., 1])), rots, kx, ky)
    assert got.shape == ref.shape and close(ref, got) < TOL


def test_kernels_match_the_vectorised_reference_on_the_gpu():
    rng = np.random.default_rng(5)
    g, b, p = 36, 9, 400
    kx, ky, rots, vals, wts = random_slices(rng, b, p, radius=15.5)
    fast = cupy.zeros((g, g, g, CHANNELS), cupy.float32)
    slow = cupy.zeros((g, g, g, CHANNELS), cupy.float32)
    insert_slices(cupy, fast, cupy.asarray(vals), cupy.asarray(wts), rots, kx, ky, use_kernel=True)
    insert_slices(cupy, slow, cupy.asarray(vals), cupy.asarray(wts), rots, kx, ky, use_kernel=False)
    assert close(slow.get(), fast.get()) < TOL


def particles(box: int, n: int, psize: float, seed: int):
    """Noisy CTF-modulated projections with shifts, astigmatism, phase shifts and mixed
    signs: every term the fused kernel computes on the device."""
    rng = np.random.default_rng(seed)
    truth = phantom(box, psize, seed=seed)
    rots = random_rotations(n, rng)
    shifts = rng.normal(0, 2.0, (n, 2))
    df = rng.uniform(8000, 25000, n)
    astig = rng.uniform(0, 2000, n)
    ctf = CtfParams(df1_A=df + astig / 2, df2_A=df - astig / 2, df_angle_rad=rng.uniform(0, np.pi, n),
                    accel_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7), amp_contrast=np.full(n, 0.1),
                    phase_shift_rad=rng.uniform(0, 0.5, n))
    imgs = Projector(np, truth, psize).project(rots, shifts, ctf)
    imgs += rng.normal(0, imgs.std(), imgs.shape).astype(np.float32)
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)
    imgs *= sign[:, None, None].astype(np.float32)
    return truth, imgs, rots, shifts, ctf, sign, rng.permutation(np.arange(n) % 2)


@pytest.mark.parametrize("box,symmetry,slab_planes", [(48, "C1", None), (32, "D2", None), (48, "C1", 7), (32, "D2", 5)])
def test_gpu_reconstructor_matches_the_cpu_one(box, symmetry, slab_planes):
    """With slab_planes, insertion runs in z-slab passes of that many planes (as on large
    grids, where a pass is sized to the L2 cache); the sums must not change."""
    truth, imgs, rots, shifts, ctf, sign, split = particles(box, 500, 2.0, seed=3)
    ops = symmetry_matrices(symmetry)
    recs = {xp: Reconstructor(xp, box, 2.0) for xp in (np, cupy)}
    m = recs[cupy].acc.shape[1]
    if slab_planes:
        recs[cupy].device.slabs = z_slabs(m, slab_planes * 2 * m * m * CHANNELS * 4)
        assert len(recs[cupy].device.slabs) == -(-m // slab_planes)
    # uneven batches: a second cuFFT plan and both pinned buffers get used
    for a, b in ((0, 200), (200, 437), (437, 500)):
        for rec in recs.values():
            rec.insert(imgs[a:b], rots[a:b], shifts[a:b], ctf.take(slice(a, b)), sign[a:b], split[a:b],
                       extra_rots=ops if len(ops) > 1 else None)
    cpu, gpu = recs[np], recs[cupy]
    assert close(cpu.acc, gpu.acc.get()) < TOL
    maps = [cpu.finish(), gpu.finish()]
    for ref, got in zip(*maps, strict=True):
        assert close(ref, got) < TOL
    assert np.corrcoef(maps[1][2].ravel(), truth.ravel())[0, 1] > 0.8
    assert set(gpu.device.times.seconds()) == {"fft", "insertion"}


def test_noise_free_gpu_map_recovers_the_phantom():
    truth = phantom(32, 2.0, seed=1)
    rng = np.random.default_rng(2)
    rots = random_rotations(400, rng)
    imgs = Projector(cupy, truth, 2.0).project(rots, np.zeros((400, 2)), None)  # the gather kernel
    rec = Reconstructor(cupy, 32, 2.0)
    rec.insert(imgs, rots, np.zeros((400, 2)), None, np.ones(400), np.arange(400) % 2)
    assert np.corrcoef(rec.finish()[2].ravel(), truth.ravel())[0, 1] > 0.95


def test_device_reduction_through_host_memory_sums_ranks(monkeypatch):
    """The pinned-memory path of reduce_sum, chunk boundaries included, on rank 0's view of
    a two-rank world (a stand-in communicator adds what the second rank would send; the
    real two-rank run is the next test)."""
    from cryohpc.jobrun import mpi

    class TwoRanks:
        rank, size = 0, 2

        def Reduce(self, send, recv, op=None, root=0):  # noqa: N802
            recv[...] = send + 1.0  # the other rank holds ones

    monkeypatch.setattr(mpi, "REDUCE_CHUNK_BYTES", 4 * 1000)
    monkeypatch.setenv("CRYOHPC_MPI_DEVICE_BUFFERS", "0")
    a = cupy.asarray(np.random.default_rng(0).random((7, 11, 13, 3)).astype(np.float32))
    out = mpi.reduce_device_array(TwoRanks(), a, op=None)
    assert isinstance(out, cupy.ndarray) and out.shape == a.shape
    assert np.array_equal(out.get(), a.get() + 1.0)


def test_two_ranks_share_one_gpu_through_the_master(tmp_path):
    from cryohpc.api import Api
    from cryohpc.compute.io_mrc import read_volume

    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5)
    master = ThreadMaster(api).start()
    try:
        project = api.create_project("gpu")
        sim = project.create_job("simulate_particles", params={"n_particles": 600, "box": 32, "psize_A": 2.0,
                                                               "snr": 1.0, "seed": 4})
        sim.queue()
        assert sim.wait(300).value == "completed", sim.model.errors_run
        maps = {}
        for ranks, gpus in ((2, 1), (1, 0)):
            job = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks, "compute_num_gpus": gpus,
                                                                 "batch_size": 64, "checkpoint_every_s": 0,
                                                                 "compute_share_gpus": ranks > gpus})
            job.connect("particles", sim.uid, "particles")
            job.queue()
            assert job.wait(300).value == "completed", job.model.errors_run
            log = (job.dir / "job.log").read_text()
            maps[ranks] = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
            if ranks == 2:
                assert "2 rank(s) on cupy (GPU 0)" in log
                assert "reduction across 2 ranks" in log
                # each rank reports its GPU time and its pool's peak, which holds at least
                # its two half-set accumulators
                acc_bytes = accumulator_bytes(32, Reconstructor(np, 32, 2.0).pad)
                usage = job.model.runs[-1].usage
                assert sorted(u["rank"] for u in usage) == [0, 1]
                assert all(0 < u["gpu_s"] <= u["wall_s"] for u in usage), usage
                assert all(u["gpu_peak_bytes"] >= acc_bytes for u in usage), (usage, acc_bytes)
                gpu_hours = sum(r["gpu_hours"] for r in api.usage(by=("type",)) if r["type"] == "homo_reconstruct")
                assert gpu_hours == pytest.approx(sum(u["gpu_s"] for u in usage) / 3600, rel=1e-6)
            else:
                assert all("gpu_s" not in u or u["gpu_s"] == 0 for u in job.model.runs[-1].usage)
        assert close(maps[1], maps[2]) < TOL
    finally:
        master.stop()


def test_pinned_reads_reach_the_gpu_and_their_buffer_comes_back():
    """A batch read into a pooled pinned buffer goes to the device without a host copy and
    the buffer returns to the pool: one buffer serves every batch."""
    _, imgs, rots, shifts, ctf, sign, split = particles(32, 300, 2.0, seed=8)
    cpu, gpu = Reconstructor(np, 32, 2.0), Reconstructor(cupy, 32, 2.0)
    gpu.reserve_host_buffers(1, 128)
    for a in range(0, 300, 128):
        sl = slice(a, min(300, a + 128))
        buf = gpu.host_buffer(sl.stop - sl.start)  # waits for the previous batch's copy
        buf[...] = imgs[sl]
        gpu.insert(buf, rots[sl], shifts[sl], ctf.take(sl), sign[sl], split[sl])
        cpu.insert(imgs[sl], rots[sl], shifts[sl], ctf.take(sl), sign[sl], split[sl])
    assert close(cpu.acc, gpu.acc.get()) < TOL
    gpu.release_host_buffers()


def test_released_host_buffers_wake_a_waiting_reader():
    """When inserting stops on an error, readers waiting for a buffer that will never come
    back raise instead of hanging the job."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    rec = Reconstructor(cupy, 16, 1.0)
    rec.reserve_host_buffers(2, 8)
    assert rec.host_buffer(8).shape == (8, 16, 16) and rec.host_buffer(5).shape == (5, 16, 16)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(rec.host_buffer, 4)
        time.sleep(0.3)
        assert not waiting.done()
        rec.release_host_buffers()
        with pytest.raises(RuntimeError, match="released"):
            waiting.result(timeout=10)
    assert rec.host_buffer(3).shape == (3, 16, 16)  # afterwards: plain host arrays
