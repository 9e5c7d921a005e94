"""Numerics against known answers: CTF, insertion kernels, FSC, symmetry, reconstruction."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import random_slices
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.compute.backproject import CHANNELS, add_friedel_mates, extract_slices, insert_slices
from cryohpc.compute.ctf import ctf_values, electron_wavelength_A
from cryohpc.compute.fsc import fsc, fsc_reference
from cryohpc.compute.geometry import random_rotations
from cryohpc.compute.phantom import phantom
from cryohpc.compute.project import Projector
from cryohpc.compute.reconstruct import CtfParams, Reconstructor
from cryohpc.compute.symmetry import symmetry_matrices
from cryohpc.errors import UserError


def ctf_params(n: int, rng: np.random.Generator, astig: float = 300.0) -> CtfParams:
    df = rng.uniform(1e4, 2e4, n)
    a = rng.uniform(0, astig, n)
    return CtfParams(df1_A=df + a / 2, df2_A=df - a / 2, df_angle_rad=rng.uniform(0, np.pi, n),
                     accel_kv=np.full(n, 300.0), cs_mm=np.full(n, 2.7), amp_contrast=np.full(n, 0.1),
                     phase_shift_rad=np.zeros(n))


def test_wavelength_at_300kv():
    assert electron_wavelength_A(300) == pytest.approx(0.019687, abs=1e-6)


def test_ctf_is_amplitude_contrast_at_origin_and_zero_where_theory_says():
    w = 0.07
    one = lambda k: ctf_values(np, k, np.zeros_like(k), [15000.0], [15000.0], [0.0], [300.0], [0.0], [w], [0.0])[0]  # noqa: E731
    assert one(np.array([0.0]))[0] == pytest.approx(w, abs=1e-6)
    # Cs = 0: γ = -πλΔf s² - asin(w); zeros where γ = -mπ
    lam = electron_wavelength_A(300)
    s = np.sqrt((np.arange(1, 4) * np.pi - np.arcsin(w)) / (np.pi * lam * 15000.0))
    assert np.abs(one(s)).max() < 1e-5
    # astigmatism: along the df1 direction the first zero comes at df1's position
    c = ctf_values(np, np.array([s[0], 0.0]), np.array([0.0, s[0]]), [15000.0], [12000.0], [0.0], [300.0], [0.0],
                   [w], [0.0])[0]
    assert abs(c[0]) < 1e-5 and abs(c[1]) > 0.1


def test_numba_kernel_matches_vectorised_insertion():
    rng = np.random.default_rng(0)
    g, b, p = 36, 7, 300  # a grid of 36 with its margin holds frequencies up to 16
    kx, ky, rots, vals, wts = random_slices(rng, b, p, radius=16)
    fast = np.zeros((g, g, g, CHANNELS), np.float32)
    slow = np.zeros((g, g, g, CHANNELS), np.float32)
    insert_slices(np, fast, vals, wts, rots, kx, ky, use_kernel=True)
    insert_slices(np, slow, vals, wts, rots, kx, ky, use_kernel=False)
    assert np.allclose(fast, slow, atol=1e-5)
    assert fast[..., 2].sum() == pytest.approx(wts.sum(), rel=1e-4)  # trilinear weights sum to one
    with pytest.raises(ValueError, match="do not fit"):
        insert_slices(np, fast, vals[:, :1], wts[:, :1], rots, np.array([17.0]), np.array([0.5]))
    re, im = np.ascontiguousarray(fast[..., 0]), np.ascontiguousarray(fast[..., 1])
    got = extract_slices(np, (re, im), rots, kx, ky, use_kernel=True)
    ref = extract_slices(np, re + 1j * im, rots, kx, ky, use_kernel=False)
    assert np.allclose(got, ref, atol=1e-5)


def test_friedel_mates_make_a_real_map():
    rng = np.random.default_rng(1)
    acc = np.zeros((20, 20, 20, CHANNELS), np.float32)
    insert_slices(np, acc, (rng.normal(size=(3, 40)) + 1j * rng.normal(size=(3, 40))).astype(np.complex64),
                  np.ones((3, 40), np.float32), random_rotations(3, rng), rng.uniform(-6, 6, 40), rng.uniform(0, 6, 40))
    re, im, w = add_friedel_mates(np, acc)
    spec = re + 1j * im
    mirrored = np.roll(np.flip(spec), 1, axis=(0, 1, 2))
    assert np.allclose(spec, np.conj(mirrored)) and np.allclose(w, np.roll(np.flip(w), 1, axis=(0, 1, 2)))
    real_space = np.fft.ifftn(np.fft.ifftshift(spec))
    assert np.abs(real_space.imag).max() < 1e-6 * max(1.0, np.abs(real_space.real).max())


def test_fsc_of_identical_and_independent_maps():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(32, 32, 32))
    same = fsc(a, a, 1.5)
    assert np.allclose(same.fsc, 1.0)
    assert same.resolution_A(0.143) == pytest.approx(3.0)  # never crosses: Nyquist
    other = fsc(a, rng.normal(size=(32, 32, 32)), 1.5)
    assert np.abs(other.fsc[4:]).max() < 0.2
    assert np.allclose(other.freq_invA[-1], 1 / 3.0)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 17), st.integers(0, 2**32 - 1), st.floats(0.0, 3.0))
def test_half_spectrum_fsc_equals_the_whole_spectrum_sum(n, seed, noise):
    """The FSC sums over a real FFT's half spectrum (mates counted twice but on the kx = 0
    and, even boxes, kx = n/2 planes) equal the sums over every voxel, odd and even."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, n, n))
    b = a + noise * rng.normal(size=(n, n, n))
    fast, ref = fsc(a, b, 1.3), fsc_reference(a, b, 1.3)
    assert np.allclose(fast.fsc, ref.fsc, atol=1e-9) and np.array_equal(fast.freq_invA, ref.freq_invA)


def test_symmetry_groups_are_closed():
    for name, order in (("C1", 1), ("C4", 4), ("D2", 4), ("D7", 14)):
        ops = symmetry_matrices(name)
        assert len(ops) == order and np.allclose(ops[0], np.eye(3))
        for a in ops:
            products = [a @ b for b in ops]
            assert all(any(np.allclose(p, c, atol=1e-9) for c in ops) for p in products)
    with pytest.raises(UserError, match="use C<n>"):
        symmetry_matrices("I2")


@pytest.fixture(scope="module")
def truth():
    return phantom(32, 2.0, seed=3)


def simulate(truth, n, rng, ctf=True, noise=0.0):
    rots = random_rotations(n, rng)
    shifts = rng.normal(0, 1.5, (n, 2))
    c = ctf_params(n, rng) if ctf else None
    imgs = Projector(np, truth, 2.0).project(rots, shifts, c)
    if noise:
        imgs = imgs + rng.normal(0, noise * imgs.std(), imgs.shape).astype(np.float32)
    return imgs, rots, shifts, c


def reconstruct(imgs, rots, shifts, c, sym=None, batch=100, **kw):
    rec = Reconstructor(np, imgs.shape[-1], 2.0, **kw)
    n = len(imgs)
    for i in range(0, n, batch):
        sl = slice(i, i + batch)
        rec.insert(imgs[sl], rots[sl], shifts[sl], c.take(sl) if c else None, np.ones(len(imgs[sl])),
                   np.arange(n)[sl] % 2, extra_rots=sym)
    return rec.finish()


def test_noise_free_reconstruction_recovers_the_phantom(truth):
    imgs, rots, shifts, c = simulate(truth, 1500, np.random.default_rng(4))
    half_a, half_b, full = reconstruct(imgs, rots, shifts, c)
    assert np.corrcoef(full.ravel(), truth.ravel())[0, 1] > 0.99
    # shells up to 0.9 of Nyquist (tests/test_reconstruct_accuracy.py: weaker phantoms)
    assert fsc(full, truth, 2.0).up_to(0.9).min() >= 0.9
    assert fsc(half_a, half_b, 2.0).up_to(0.9).min() >= 0.9


@pytest.mark.parametrize("pad", [1, 2, 3])
def test_odd_boxes_reconstruct_as_well_as_even_ones(pad):
    """An odd box (and with oversampling 1 or 3, an odd grid) has its origin at box//2,
    which no sign flip reaches: the same known answer as the even box above, on both
    finishing paths. (Before: FSC 0.91 at pad 2, maps off by their whole amplitude at
    odd grids.)"""
    truth = phantom(33, 2.0, seed=3)
    imgs, rots, shifts, c = simulate(truth, 1500, np.random.default_rng(4))
    for use_kernel in (True, False):
        half_a, half_b, full = reconstruct(imgs, rots, shifts, c, pad=pad, use_kernel=use_kernel)
        assert np.corrcoef(full.ravel(), truth.ravel())[0, 1] > 0.99
        assert fsc(full, truth, 2.0).up_to(0.9).min() >= 0.95


def test_wrong_shift_sign_or_pose_would_be_caught(truth):
    """The known-answer test above only means something if errors show: they do."""
    imgs, rots, shifts, c = simulate(truth, 600, np.random.default_rng(5))
    good = reconstruct(imgs, rots, shifts, c)[2]
    flipped = reconstruct(imgs, rots, -shifts, c)[2]
    transposed = reconstruct(imgs, np.swapaxes(rots, 1, 2), shifts, c)[2]
    corr = lambda m: np.corrcoef(m.ravel(), truth.ravel())[0, 1]  # noqa: E731
    assert corr(good) > 0.97 and corr(flipped) < corr(good) - 0.05 and corr(transposed) < corr(good) - 0.05


def test_symmetric_reconstruction_uses_every_operator():
    def quarter_turn(v):  # 90° about z through the grid centre (index n/2, where rot90 turns about (n-1)/2)
        return np.roll(np.rot90(v, 1, axes=(1, 2)), 1, axis=1)

    truth = phantom(32, 2.0, seed=6, symmetry="C4", n_atoms=120)
    assert np.allclose(quarter_turn(truth), truth, atol=0.02)
    imgs, rots, shifts, c = simulate(truth, 300, np.random.default_rng(7))
    plain = reconstruct(imgs, rots, shifts, c)[2]
    sym = reconstruct(imgs, rots, shifts, c, sym=symmetry_matrices("C4"))[2]
    corr = lambda m: np.corrcoef(m.ravel(), truth.ravel())[0, 1]  # noqa: E731
    assert corr(sym) > corr(plain)
    assert np.corrcoef(sym.ravel(), quarter_turn(sym).ravel())[0, 1] > 0.99


@pytest.mark.parametrize("box,pad", [(24, 2), (25, 2), (20, 3), (15, 3), (16, 1), (25, 1)])
def test_compiled_finish_equals_the_reference_finish(box, pad):
    """The CPU finishing path (compiled passes, two work grids, an inverse FFT run axis by
    axis over only the lines the central box needs) gives the reference path's maps
    within 1e-5 of their maximum, for even and odd boxes and grids and oversampling 1 to 3
    (before the unpaired k = -g/2 planes were left out, they differed by up to 1e-3)."""
    rng = np.random.default_rng(box * 10 + pad)
    fast = Reconstructor(np, box, 2.0, pad=pad, gridding_iterations=4)
    n = 60
    images = rng.normal(size=(n, box, box)).astype(np.float32)
    fast.insert(images, random_rotations(n, rng), rng.normal(0, 1.5, (n, 2)), ctf_params(n, rng), np.ones(n),
                np.arange(n) % 2)
    ref = Reconstructor(np, box, 2.0, pad=pad, gridding_iterations=4, use_kernel=False)
    ref.acc = fast.acc.copy()
    for got, expected in zip(fast.finish(), ref.finish(), strict=True):
        assert got.shape == (box, box, box)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("box,use_ctf,symmetry", [(24, True, "C1"), (25, True, "C1"), (20, False, "D2"),
                                                  (16, True, "C3")])
def test_compiled_insertion_equals_the_vectorised_one(box, use_ctf, symmetry):
    """The one-pass CPU insertion (centring, shift phase as a product of per-row and
    per-column factors, CTF, trilinear scatter per symmetry operator) fills the same
    accumulators as the vectorised reference, to 1e-5 of their maximum."""
    rng = np.random.default_rng(box)
    n = 40
    images = rng.normal(size=(n, box, box)).astype(np.float32)
    rots, shifts = random_rotations(n, rng), rng.normal(0, 2.5, (n, 2))
    ctf = ctf_params(n, rng) if use_ctf else None
    sign, split = np.where(rng.random(n) < 0.3, -1.0, 1.0), rng.integers(0, 2, n)
    ops = symmetry_matrices(symmetry)
    accs = []
    for use_kernel in (True, False):
        rec = Reconstructor(np, box, 1.7, use_kernel=use_kernel)
        rec.insert(images, rots, shifts, ctf, sign, split, extra_rots=ops if len(ops) > 1 else None)
        accs.append(rec.acc)
    assert np.abs(accs[0] - accs[1]).max() <= 1e-5 * np.abs(accs[1]).max()
