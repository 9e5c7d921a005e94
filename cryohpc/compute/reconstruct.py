"""Direct Fourier inversion with CTF weighting, in two half sets.

Per particle: X = sign · FFT(zero-padded image), shifted by its pose shift, times CTF,
inserted at R·k; the CTF² goes to the weights. A map is N / (W + λ), inverse-FFT'd,
cropped and divided by the trilinear kernel's sinc². State is three float32 grids per
half, so MPI ranks and checkpoints add them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np

from .backproject import (
    CHANNELS,
    HAVE_NUMBA,
    add_friedel_mates,
    grid_with_margin,
    insert_slices,
    live_radius,
    trilinear_gridding_correction,
)
from .ctf import CtfGrid, ctf_coefficients
from .fourier import crop_center, half_plane_points, ifftn_centered, rfft2
from .gridding import sampling_multiplier
from .xp import to_numpy

HALVES = 2


@dataclass
class CtfParams:
    """Per-particle CTF fields (CryoSPARC names), each an array of length B."""

    df1_A: np.ndarray
    df2_A: np.ndarray
    df_angle_rad: np.ndarray
    accel_kv: np.ndarray
    cs_mm: np.ndarray
    amp_contrast: np.ndarray
    phase_shift_rad: np.ndarray

    def take(self, sl) -> CtfParams:
        return CtfParams(**{k: np.asarray(v)[sl] for k, v in self.__dict__.items()})


def soft_mask_outside_sphere(xp: ModuleType, vol: object, edge_px: float = 3.0) -> object:
    """Corners beyond the inscribed sphere set to the background level outside it, with a
    raised-cosine edge: what RELION's reconstruction does against aliasing in the corners,
    where the noise is largest."""
    n = vol.shape[0]
    k = xp.arange(n, dtype=xp.float32) - n // 2
    r = xp.sqrt(k[:, None, None] ** 2 + k[None, :, None] ** 2 + k[None, None, :] ** 2)
    radius = n / 2 - edge_px
    outside = r > radius + edge_px
    if not bool(outside.any()):
        return vol
    background = vol[outside].mean()
    m = xp.clip((r - radius) / edge_px, 0.0, 1.0)
    m = 0.5 * (1 + xp.cos(np.pi * m))  # 1 inside, 0 beyond the edge
    return vol * m + background * (1 - m)


class Reconstructor:
    """Accumulates particles into half-set Fourier grids oversampled ``pad`` times.

    As in RELION, each image's box-size spectrum (CTF applied on that grid) is inserted at
    coordinates scaled by ``pad``; images are not zero-padded. That keeps the model of
    delocalised CTF signal RELION's and costs pad² fewer samples per particle.
    """

    def __init__(self, xp: ModuleType, box: int, psize_A: float, pad: int = 2, use_kernel: bool = True,
                 gridding_iterations: int = 10):
        self.xp, self.box, self.psize_A, self.pad = xp, box, psize_A, pad
        self.gridding_iterations = gridding_iterations
        self.g = pad * box
        self.kx, self.ky = half_plane_points(box, box / 2)
        # rows and columns of these points in an unshifted rfft2 of the image
        self._rows = xp.asarray(self.ky % box)
        self._cols = xp.asarray(self.kx)
        self._gx = (self.kx * pad).astype(np.float32)  # positions on the oversampled grid
        self._gy = (self.ky * pad).astype(np.float32)
        self._ctf = CtfGrid(xp, self.kx / (box * psize_A), self.ky / (box * psize_A))
        # the image centre is at index box//2: exp(2πi k·(box//2)/box) moves the origin
        # there, which on an even box is the sign (-1)^(kx+ky)
        if box % 2 == 0:
            self._centre_sign = xp.asarray(np.where((self.kx + self.ky) % 2, -1.0, 1.0).astype(np.float32))
        else:
            turn = 2 * np.pi * ((self.kx + self.ky) * (box // 2) % box) / box
            self._centre_sign = xp.asarray(np.exp(1j * turn).astype(np.complex64))
        self.use_kernel = use_kernel
        self.gridding_correction = True
        m = grid_with_margin(self.g)
        self.acc = xp.zeros((HALVES, m, m, m, CHANNELS), dtype=xp.float32)
        self.live_radius = live_radius(self.g)  # insertion writes nothing beyond it
        self.count = 0
        self._points = None  # the half plane's per-point arrays the compiled CPU pass reads
        if xp is np and use_kernel and HAVE_NUMBA:
            centre = np.asarray(self._centre_sign).astype(np.complex64)
            self._points = {
                "rows": np.asarray(self._rows, np.int64), "cols": np.asarray(self._cols, np.int64),
                "centre": centre, "kx": self.kx.astype(np.int64), "ky": self.ky.astype(np.int64),
                "gx": self._gx, "gy": self._gy,
                **{k: np.ascontiguousarray(np.asarray(getattr(self._ctf, k), np.float32).reshape(-1))
                   for k in ("s2", "cos2", "sin2")}}
        self.device = None  # the CUDA kernels' batch pipeline, on CuPy
        if xp is not np and use_kernel:
            if box % 2:
                raise ValueError(f"box {box} is odd: the GPU kernels take even boxes only")
            from .reconstruct_cuda import DeviceInserter

            self.device = DeviceInserter(box, pad, self.kx, self.ky, (self._ctf.s2, self._ctf.cos2, self._ctf.sin2))

    def reserve_host_buffers(self, count: int, batch: int) -> None:
        """Have ``count`` image buffers of ``batch`` images ready for :meth:`host_buffer`
        (pinned on a GPU; call from the thread that inserts)."""
        if self.device is not None:
            self.device.reserve_host_buffers(count, batch)

    def release_host_buffers(self) -> None:
        """Give the buffers back; readers still waiting for one raise (call when inserting stops)."""
        if self.device is not None:
            self.device.release_host_buffers()

    def host_buffer(self, n: int) -> np.ndarray:
        """An (n, box, box) float32 array to read images into, from any thread; on a GPU a
        pinned buffer that goes to the device without another host copy (it returns to
        the pool once :meth:`insert` has copied it)."""
        if self.device is not None and self.device.pool_ready:
            return self.device.host_buffer(n)
        return np.empty((n, self.box, self.box), np.float32)

    def insert(self, images: np.ndarray, rots: np.ndarray, shifts_px: np.ndarray, ctf: CtfParams | None,
               sign: np.ndarray, split: np.ndarray, extra_rots: np.ndarray | None = None) -> None:
        """Insert B images (B, box, box) with rotations (B, 3, 3), shifts (B, 2) in pixels,
        half-set labels ``split`` (0/1); ``extra_rots`` (k, 3, 3) are symmetry operators."""
        xp = self.xp
        ops = np.eye(3)[None] if extra_rots is None else np.asarray(extra_rots, np.float64)
        if self.device is not None:
            self.device.insert(self.acc, images, rots, shifts_px, ctf, sign, split, ops)
            self.count += len(images)
            return
        imgs = xp.asarray(images, dtype=xp.float32) * xp.asarray(sign, dtype=xp.float32)[:, None, None]
        spec = rfft2(xp, imgs)
        if self._points is not None:  # one compiled pass per particle (insert_cpu)
            from .insert_cpu import insert_particles

            rows = None
            if ctf is not None:
                k = ctf_coefficients(ctf.df1_A, ctf.df2_A, ctf.df_angle_rad, ctf.accel_kv, ctf.cs_mm,
                                     ctf.amp_contrast, ctf.phase_shift_rad)
                rows = np.stack([k.df_mean, k.df_half_diff, k.cos2az, k.sin2az, k.a, k.b, k.offset], axis=1)
            split = np.asarray(split)
            for h in range(HALVES):
                which = np.flatnonzero(split == h)
                if len(which):
                    insert_particles(self.acc[h], np.ascontiguousarray(spec, np.complex64), which, self._points,
                                     shifts_px, rows, rots, ops, self.box)
            self.count += len(images)
            return
        values = spec[:, self._rows, self._cols] * self._centre_sign  # (B, P), centred origin
        s = xp.asarray(np.asarray(shifts_px, dtype=np.float32))
        phase = (-2 * np.pi / self.box) * (s[:, :1] * xp.asarray(self.kx, dtype=xp.float32)[None]
                                           + s[:, 1:] * xp.asarray(self.ky, dtype=xp.float32)[None])
        values = values * (xp.cos(phase) + 1j * xp.sin(phase))
        if ctf is not None:
            c = self._ctf.values(ctf.df1_A, ctf.df2_A, ctf.df_angle_rad, ctf.accel_kv, ctf.cs_mm,
                                 ctf.amp_contrast, ctf.phase_shift_rad)
            values = values * c
            weights = c * c
        else:
            weights = xp.ones(values.shape, dtype=xp.float32)
        split = np.asarray(split)
        for h in range(HALVES):
            sel = np.flatnonzero(split == h)
            if not len(sel):
                continue
            sel_x = xp.asarray(sel)
            for op in ops:
                r = op @ np.asarray(rots)[sel]  # symmetry-equivalent orientations
                insert_slices(xp, self.acc[h], values[sel_x], weights[sel_x], r, self._gx, self._gy,
                              use_kernel=self.use_kernel)
        self.count += len(images)

    # -- finishing ------------------------------------------------------------------------
    def map_of(self, acc, wiener: float = 1e-3, other=None, threads: int | None = None) -> np.ndarray:
        """The map of ``acc`` (+ ``other``, the second half set, for the full map), one
        half-set grid of the accumulator; ``threads`` limits the CPU path's cores."""
        xp = self.xp
        if self.device is not None:
            from .reconstruct_cuda import finish_map_device

            vol = finish_map_device(acc, other, self.g, self.box, wiener, self.gridding_iterations)
        elif xp is np and self.use_kernel:  # compiled passes and a real inverse FFT (finish_cpu)
            from . import finish_cpu

            vol = finish_cpu.real_map(acc, other, self.g, self.box, self.gridding_iterations, wiener, threads)
        else:  # the reference: any array module
            if other is not None:
                acc = acc + other
            re, im, w = (crop_center(a, self.g, 3) for a in add_friedel_mates(xp, acc))
            mult = sampling_multiplier(xp, w, self.gridding_iterations, wiener, use_kernel=self.use_kernel)
            real = xp.real(ifftn_centered(xp, (re + 1j * im) * mult))
            vol = crop_center(real, self.box, 3)
        if self.gridding_correction:
            vol = vol / trilinear_gridding_correction(xp, self.box, self.g)
        return to_numpy(soft_mask_outside_sphere(xp, vol)).astype(np.float32)

    def finish(self, wiener: float = 1e-3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Half map A, half map B, full map (real space, box³, float32)."""
        half_a = self.map_of(self.acc[0], wiener)
        half_b = self.map_of(self.acc[1], wiener)
        full = self.map_of(self.acc[0], wiener, other=self.acc[1])
        return half_a, half_b, full
