"""Reconstruction accuracy to Nyquist on noise-free particles of phantoms whose high
frequencies are weak (Gaussian atoms 1.1-2.3 px wide: the top shell is ~10⁻⁵ of the lowest),
at two box sizes and two pixel sizes, from exact projections and from cryohpc's projector
(RELION's projections: tests/test_relion_peer.py). The truth is the phantom's band-limited
volume; the threshold is FSC ≥ 0.9 up to 0.9 of Nyquist."""

from __future__ import annotations

import numpy as np
import pytest

from cryohpc.compute.fsc import fsc
from cryohpc.compute.geometry import random_rotations
from cryohpc.compute.gridding import NORM, _smooth, inside_nyquist, sampling_multiplier
from cryohpc.compute.phantom import AtomModel
from cryohpc.compute.project import Projector
from cryohpc.compute.reconstruct import CtfParams, Reconstructor

CASES = [(48, 1.5, 3000), (64, 3.0, 4000)]  # box, Å/px, particles: both boxes, both pixel sizes
WEAK = (1.25, 1.67, 2.5)  # atom widths (px): the top shell ~10⁻⁶ of the lowest


def particles(n: int, psize: float, seed: int, preferred: bool = False):
    rng = np.random.default_rng(seed)
    rots = random_rotations(n, rng)
    if preferred:  # most views within ~25° of the top view
        from scipy.spatial.transform import Rotation

        angles = np.stack([rng.uniform(-np.pi, np.pi, n), np.abs(rng.normal(0, 0.4, n)), rng.uniform(-np.pi, np.pi, n)], 1)
        rots = Rotation.from_euler("ZYZ", angles).as_matrix()
    shifts = rng.normal(0, 2.0, (n, 2))
    df = rng.uniform(1e4, 2.5e4, n)
    ctf = CtfParams(df1_A=df, df2_A=df - rng.uniform(0, 400, n), df_angle_rad=rng.uniform(0, np.pi, n),
                    accel_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7), amp_contrast=np.full(n, 0.1),
                    phase_shift_rad=np.zeros(n))
    return rots, shifts, ctf


def reconstruct(images, rots, shifts, ctf, psize, **kw) -> Reconstructor:
    rec = Reconstructor(np, images.shape[-1], psize, **kw)
    n = len(images)
    for a in range(0, n, 500):
        s = slice(a, a + 500)
        rec.insert(images[s], rots[s], shifts[s], ctf.take(s), np.ones(len(images[s])), np.arange(n)[s] % 2)
    return rec



@pytest.fixture(scope="module", params=CASES, ids=[f"box{b}-{p}A" for b, p, _ in CASES])
def exact(request):
    box, psize, n = request.param
    model = AtomModel.random(box, sigma_px=WEAK, seed=11)
    rots, shifts, ctf = particles(n, psize, seed=12)
    return model.volume(), model.images(rots, shifts, psize, ctf), rots, shifts, ctf, psize


def test_exact_projections_reconstruct_to_nyquist(exact):
    truth, images, rots, shifts, ctf, psize = exact
    curve = fsc(reconstruct(images, rots, shifts, ctf, psize).finish()[2], truth, psize)
    assert curve.up_to(0.9).min() >= 0.9, curve.fsc
    assert curve.up_to(0.75).min() >= 0.99, curve.fsc


def test_own_projections_reconstruct_to_nyquist(exact):
    """The simulator's projections (trilinear, padded 2) carry its own small leakage; still
    0.9 to 0.9 of Nyquist."""
    truth, _, rots, shifts, ctf, psize = exact
    images = Projector(np, truth, psize).project(rots, shifts, ctf)
    curve = fsc(reconstruct(images, rots, shifts, ctf, psize).finish()[2], truth, psize)
    assert curve.up_to(0.9).min() >= 0.9, curve.fsc


def test_errors_would_show_at_the_top_shells(exact):
    """The test above means something: a defocus error of 150·psize² Å (a phase error that
    grows with k², under 0.5 rad at half Nyquist) leaves the low shells and breaks the top."""
    truth, images, rots, shifts, ctf, psize = exact
    off = 150 * psize**2
    wrong = CtfParams(**{**ctf.__dict__, "df1_A": ctf.df1_A + off, "df2_A": ctf.df2_A + off})
    curve = fsc(reconstruct(images, rots, shifts, wrong, psize).finish()[2], truth, psize)
    assert curve.up_to(0.5).min() > 0.99
    assert curve.up_to(0.9).min() < 0.9


def test_gridding_iterations_flatten_the_sampling_density():
    """After the iterations, (w·W) ∗ K is 1 wherever particles sampled (what the
    iteration solves for), and the compiled loop equals the slicing reference."""
    box, psize, n = 32, 2.0, 400
    model = AtomModel.random(box, seed=3, n_atoms=60)
    rots, shifts, ctf = particles(n, psize, seed=4, preferred=True)
    rec = reconstruct(model.images(rots, shifts, psize, ctf), rots, shifts, ctf, psize)
    from cryohpc.compute.backproject import add_friedel_mates
    from cryohpc.compute.fourier import crop_center

    weight = crop_center(add_friedel_mates(np, rec.acc[0] + rec.acc[1])[2], rec.g, 3)
    w = sampling_multiplier(np, weight, 30, 1e-3)
    ref = sampling_multiplier(np, weight, 30, 1e-3, use_kernel=False)
    assert np.abs(w - ref).max() <= 1e-5 * np.abs(ref).max()
    density = _smooth(np, w * weight) / NORM
    sampled = inside_nyquist(np, rec.g) & (_smooth(np, (weight > 0).astype(np.float32)) / NORM > 0.999)
    k = np.arange(rec.g) - rec.g // 2
    sampled &= k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2 < (rec.g / 2 - 2) ** 2
    assert np.percentile(np.abs(density[sampled] - 1), 99) < 0.02
    direct = sampling_multiplier(np, weight, 0, 1e-3)
    spread = _smooth(np, direct * weight) / NORM
    assert np.percentile(np.abs(spread[sampled] - 1), 99) > 0.02  # dividing alone leaves it uneven


def test_gridding_iterations_help_preferred_views():
    """Uneven sampling is where the iterated weights matter: never worse than dividing."""
    box, psize, n = 48, 1.5, 2000
    model = AtomModel.random(box, seed=5)
    truth = model.volume()
    rots, shifts, ctf = particles(n, psize, seed=6, preferred=True)
    rec = reconstruct(model.images(rots, shifts, psize, ctf), rots, shifts, ctf, psize)
    iterated = fsc(rec.finish()[2], truth, psize)
    rec.gridding_iterations = 0
    direct = fsc(rec.finish()[2], truth, psize)
    assert iterated.up_to(0.95).mean() >= direct.up_to(0.95).mean()
