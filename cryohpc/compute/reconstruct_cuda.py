"""The GPU side of :class:`~cryohpc.compute.reconstruct.Reconstructor`.

A batch travels once: readers fill pinned buffers from a pool straight from the files
(:meth:`DeviceInserter.host_buffer`; other images are copied into a pinned staging
buffer first), and the batch goes to the device asynchronously with its per-particle rows,
so the host reads the next batches while the device transforms (cuFFT, one plan per
batch shape, reused) and inserts this one (one fused kernel, :mod:`backproject_cuda`). The
host waits only before it refills a pinned buffer whose previous copy is still in flight.
Finishing works on the device with a handful of n³ grids, so a box 512 reconstruction at
padding 2 fits on an 80 GB GPU.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass, field

import cupy as cp
import cupyx
import cupyx.scipy.fft as cufft
import numpy as np

from . import backproject_cuda as kernels
from .backproject import grid_with_margin
from .ctf import ctf_coefficients
from .gridding import sampling_multiplier, weight_scale


@dataclass
class PhaseTimes:
    """Device seconds spent per phase, from CUDA events read once at the end."""

    marks: list = field(default_factory=list)  # (start, after fft, after insertion) per batch

    def seconds(self) -> dict[str, float]:
        fft = ins = 0.0
        for a, b, c in self.marks:
            c.synchronize()
            fft += cp.cuda.get_elapsed_time(a, b) / 1e3
            ins += cp.cuda.get_elapsed_time(b, c) / 1e3
        return {"fft": fft, "insertion": ins}


class DeviceInserter:
    """Inserts batches of images into ``acc`` (2, G, G, G, 4) on the current device, in
    z-slab passes sized to the L2 cache (:func:`backproject_cuda.z_slabs`)."""

    def __init__(self, box: int, pad: int, kx: np.ndarray, ky: np.ndarray, ctf_terms: tuple):
        """Points (kx, ky) of the half plane (kx >= 0) and their CTF terms (s², cos 2θ, sin 2θ)."""
        self.box = box
        self.slabs = kernels.slabs_for(grid_with_margin(pad * box), kernels.l2_bytes())
        s2, cos2, sin2 = (cp.ascontiguousarray(cp.asarray(t, dtype=cp.float32).reshape(-1)) for t in ctf_terms)
        self.points = {
            # where each point sits in an unshifted rfft2 of a box² image
            "rows": cp.asarray(ky % box, dtype=cp.int32), "cols": cp.asarray(kx, dtype=cp.int32),
            "kx": cp.asarray(kx, dtype=cp.float32), "ky": cp.asarray(ky, dtype=cp.float32),
            "gx": cp.asarray(kx * pad, dtype=cp.float32), "gy": cp.asarray(ky * pad, dtype=cp.float32),
            "s2": s2, "cos2": cos2, "sin2": sin2,
        }
        self._slots: list[dict | None] = [None, None]
        self._pool: queue.Queue | None = None  # pinned image buffers readers fill, with their last copy's event
        self._owned: dict[int, np.ndarray] = {}
        self._turn = 0
        self._plans: dict[tuple, object] = {}
        self.times = PhaseTimes()

    def reserve_host_buffers(self, count: int, batch: int) -> None:
        """Pinned buffers allocated here, in this rank's CUDA context, filled from any thread."""
        self._pool = queue.Queue()
        self._owned = {}
        for _ in range(count):
            buf = cupyx.empty_pinned((batch, self.box, self.box), np.float32)
            self._owned[id(buf)] = buf
            self._pool.put((buf, None))

    @property
    def pool_ready(self) -> bool:
        return self._pool is not None

    def release_host_buffers(self) -> None:
        """Drop the pool; a reader still waiting for a buffer (the inserting side stopped on
        an error and will return none) raises instead of waiting forever."""
        pool, self._pool, self._owned = self._pool, None, {}
        if pool is not None:
            for _ in range(64):
                pool.put((None, None))

    def host_buffer(self, n: int) -> np.ndarray:
        """The first n images of a free pinned buffer (waits until one's last copy landed)."""
        pool = self._pool
        if pool is None:
            raise RuntimeError("no pinned buffers reserved (or they were released)")
        buf, copied = pool.get()
        if buf is None:
            raise RuntimeError("the pinned buffers were released while waiting for one")
        if copied is not None:
            copied.synchronize()
        if n > len(buf):
            pool.put((buf, None))
            raise ValueError(f"{n} images do not fit the reserved buffers of {len(buf)}")
        return buf[:n]

    def _slot(self, n: int, n_ops: int, images: bool) -> dict:
        """The next pinned staging set, large enough, once its previous copy has landed
        (with an image buffer only for images that do not come from the pool)."""
        slot = self._slots[self._turn]
        if slot is not None:
            slot["copied"].synchronize()
        if slot is None or slot["part"].shape[0] < n or slot["rots"].shape[1] != n_ops:
            slot = {"images": None, "part": cupyx.empty_pinned((n, kernels.N_PARAMS), np.float64),
                    "rots": cupyx.empty_pinned((n, n_ops, 9), np.float32), "copied": None}
            self._slots[self._turn] = slot
        if images and (slot["images"] is None or slot["images"].shape[0] < n):
            slot["images"] = cupyx.empty_pinned((max(n, slot["part"].shape[0]), self.box, self.box), np.float32)
        self._turn ^= 1
        return slot

    def insert(self, acc: cp.ndarray, images: np.ndarray, rots: np.ndarray, shifts_px: np.ndarray, ctf,
               sign: np.ndarray, split: np.ndarray, ops: np.ndarray) -> None:
        n = len(images)
        if n == 0:
            return
        owner = self._owned.get(id(images.base)) if isinstance(images, np.ndarray) else None
        slot = self._slot(n, len(ops), images=owner is None)
        host_part, host_rots = slot["part"][:n], slot["rots"][:n]
        if owner is not None:  # read straight into our pinned memory: no host copy
            host_imgs = images
        else:
            host_imgs = slot["images"][:n]
            host_imgs[...] = images
        host_part[...] = particle_rows(shifts_px, ctf, sign, split)
        host_rots[...] = np.einsum("kij,bjl->bkil", ops, np.asarray(rots, np.float64)).reshape(n, len(ops), 9)
        stream = cp.cuda.get_current_stream()
        imgs = cp.empty(host_imgs.shape, cp.float32)
        part = cp.empty(host_part.shape, cp.float64)
        drots = cp.empty(host_rots.shape, cp.float32)
        for dev, host in ((imgs, host_imgs), (part, host_part), (drots, host_rots)):
            dev.set(host, stream=stream)
        slot["copied"] = stream.record()
        if owner is not None and self._pool is not None:
            self._pool.put((owner, slot["copied"]))
        start = stream.record()
        plan = self._plans.get(imgs.shape)
        if plan is None:
            plan = self._plans[imgs.shape] = cufft.get_fft_plan(imgs, axes=(-2, -1), value_type="R2C")
        spec = cufft.rfft2(imgs, plan=plan)
        after_fft = stream.record()
        kernels.insert_spectra(acc, spec, self.box, self.points, part, drots, ctf is not None, self.slabs)
        self.times.marks.append((start, after_fft, stream.record()))


def particle_rows(shifts_px: np.ndarray, ctf, sign: np.ndarray, split: np.ndarray) -> np.ndarray:
    """(B, N_PARAMS) float64: the columns the kernel reads (see P_* in its source)."""
    n = len(split)
    rows = np.zeros((n, kernels.N_PARAMS))
    rows[:, 0] = sign
    rows[:, 1:3] = shifts_px
    rows[:, 3] = split
    if ctf is not None:
        k = ctf_coefficients(ctf.df1_A, ctf.df2_A, ctf.df_angle_rad, ctf.accel_kv, ctf.cs_mm, ctf.amp_contrast,
                             ctf.phase_shift_rad)
        rows[:, 4:] = np.stack([k.df_mean, k.df_half_diff, k.cos2az, k.sin2az, k.a, k.b, k.offset], axis=1)
    return rows


def finish_map_device(a: cp.ndarray, b: cp.ndarray | None, g: int, box: int, wiener: float,
                      gridding_iterations: int = 0) -> cp.ndarray:
    """Real-space box³ map (centred) of accumulator ``a`` (+ ``b``): Friedel completion,
    N / (W + λ) within the Nyquist sphere (or N times the iterated weights of
    :mod:`gridding`), inverse FFT in place, crop. λ = wiener × the weights' scale
    (:func:`gridding.weight_scale`), as on the CPU."""
    data, weight = kernels.friedel_complete(a, b, g)
    if gridding_iterations > 0:
        # the iterations run on the host (numba, every core) so the device holds no more than
        # before: the weights go down and 1 / multiplier comes back into the same buffer
        # (divide_for_ifft divides; inf where the multiplier is 0 gives 0). 8 GB of copies
        # at box 512, against the ~6 extra g³ grids a device-side iteration would need
        mult = sampling_multiplier(np, cp.asnumpy(weight), gridding_iterations, wiener)
        with np.errstate(divide="ignore"):
            weight.set(np.reciprocal(mult, out=mult))
        del mult
        lam = 0.0
    else:
        lam = wiener * weight_scale(cp, weight)
    kernels.divide_for_ifft(data, weight, lam)
    del weight
    data = cufft.ifftn(data, overwrite_x=True)
    lo = g // 2 - box // 2
    vol = cp.ascontiguousarray(data[lo:lo + box, lo:lo + box, lo:lo + box].real)
    del data
    # the centred inverse is (-1)^(x+y+z+3g/2) times the unshifted one of the signed input
    idx = cp.arange(lo, lo + box)
    parity = (idx[:, None, None] + idx[None, :, None] + idx[None, None, :] + 3 * g // 2) % 2
    return vol * (1 - 2 * parity).astype(cp.float32)


def free_and_total_bytes() -> tuple[int, int]:
    cp.get_default_memory_pool().free_all_blocks()
    return cp.cuda.runtime.memGetInfo()
