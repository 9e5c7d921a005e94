"""The CuPy path gives the NumPy path's answers. Runs where a GPU is usable (the
project's lent GPU machines); skips cleanly elsewhere."""

from __future__ import annotations

import numpy as np
import pytest

from cryohpc.compute.xp import cupy_usable

if not cupy_usable():
    pytest.skip("no usable GPU (CuPy with a CUDA device)", allow_module_level=True)

import cupy  # noqa: E402
from conftest import random_slices  # noqa: E402

from cryohpc.compute.backproject import extract_slices, insert_slices  # noqa: E402
from cryohpc.compute.geometry import random_rotations  # noqa: E402
from cryohpc.compute.phantom import phantom  # noqa: E402
from cryohpc.compute.project import Projector  # noqa: E402
from cryohpc.compute.reconstruct import Reconstructor  # noqa: E402


def test_gpu_insertion_matches_cpu_kernel():
    rng = np.random.default_rng(0)
    g, b, p = 40, 16, 500
    kx, ky, rots, vals, wts = random_slices(rng, b, p, radius=17)
    cpu = np.zeros((g, g, g, 3), np.float32)
    insert_slices(np, cpu, vals, wts, rots, kx, ky)
    gpu = cupy.zeros((g, g, g, 3), cupy.float32)
    insert_slices(cupy, gpu, cupy.asarray(vals), cupy.asarray(wts), rots, kx, ky)
    assert np.allclose(cpu, gpu.get(), atol=1e-4)
    got = extract_slices(cupy, gpu[..., 0] + 1j * gpu[..., 1], rots, kx, ky).get()
    ref = extract_slices(np, (np.ascontiguousarray(cpu[..., 0]), np.ascontiguousarray(cpu[..., 1])), rots, kx, ky)
    assert np.allclose(got, ref, atol=1e-4)


def test_gpu_reconstruction_matches_cpu():
    truth = phantom(32, 2.0, seed=1)
    rng = np.random.default_rng(2)
    rots = random_rotations(400, rng)
    imgs = Projector(np, truth, 2.0).project(rots, np.zeros((400, 2)), None)
    maps = []
    for xp in (np, cupy):
        rec = Reconstructor(xp, 32, 2.0)
        rec.insert(imgs, rots, np.zeros((400, 2)), None, np.ones(400), np.arange(400) % 2)
        maps.append(rec.finish()[2])
    assert np.allclose(maps[0], maps[1], atol=1e-4 * np.abs(maps[0]).max())
    assert np.corrcoef(maps[1].ravel(), truth.ravel())[0, 1] > 0.95
