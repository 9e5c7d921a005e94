"""homo_reconstruct: direct Fourier inversion over MPI ranks, half maps, FSC."""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..compute.fsc import fsc, plot_fsc, write_fsc_xml
from ..compute.geometry import rotvec_to_matrix
from ..compute.gpu_budget import gpu_batch_size, memory_refusal
from ..compute.io_mrc import read_images, read_info
from ..compute.reconstruct import CtfParams, Reconstructor
from ..compute.symmetry import symmetry_matrices
from ..compute.xp import backend_name, get_xp, to_numpy, use_device
from ..dataset import Dataset
from ..errors import InputFileError, UserError
from ..jobrun.checkpoint import Checkpoint, signature
from ..jobrun.context import RunContext
from ..jobrun.mpi import local_rank, mpi_takes_device_buffers, reduce_sum, wait_sleeping
from ..jobrun.node_sum import NodeSum
from ..jobrun.stopping import StopRequested
from ..jobrun.usage import peak_rss_mb, pss_mb
from .volumes import write_volume_result

NEEDED = {
    "blob": ("blob/path", "blob/idx", "blob/shape", "blob/psize_A"),
    "alignments3D": ("alignments3D/pose", "alignments3D/shift", "alignments3D/split"),
    "ctf": ("ctf/df1_A", "ctf/df2_A", "ctf/df_angle_rad", "ctf/accel_kv", "ctf/cs_mm", "ctf/amp_contrast"),
}


def _check_fields(ctx: RunContext, ds: Dataset, use_ctf: bool) -> None:
    """Name the .cs file and field when a needed field is absent."""
    def files(slot: str) -> str:
        return ", ".join(sorted({c.slots.get(slot) or next(iter(c.slots.values()))
                                 for c in ctx.jobfile.inputs["particles"]}))

    for slot, fields in NEEDED.items():
        if slot == "ctf" and not use_ctf:
            continue
        missing = [f for f in fields if f not in ds]
        if missing:
            raise InputFileError(f"{files(slot)}: particles lack field(s) {', '.join(missing)} "
                                 f"(needed for {'poses' if slot == 'alignments3D' else slot})")
    odd = np.setdiff1d(np.unique(ds["alignments3D/split"]), [0, 1])
    if len(odd):
        raise InputFileError(f"{files('alignments3D')}: alignments3D/split holds {odd[:5].tolist()}; "
                             "half sets must be 0 or 1")


def _check_stacks(ctx: RunContext, ds: Dataset) -> tuple[int, float]:
    """Every stack exists, is whole and large enough; all share one box. Returns box, psize."""
    paths = ds["blob/path"]
    uniq, inverse = np.unique(paths, return_inverse=True)
    boxes = set()
    for i, rel in enumerate(uniq.tolist()):
        path = ctx.project_path(rel)
        if not path.exists():
            raise InputFileError(f"blob/path {rel.decode()!r} points nowhere (no file {path})")
        info = read_info(path)
        top = int(ds["blob/idx"][inverse == i].max())
        if top >= info.shape[0]:
            raise InputFileError(f"{path}: blob/idx {top} is beyond the stack's {info.shape[0]} images")
        boxes.add(info.shape[1:])
    if len(boxes) != 1 or len(set(next(iter(boxes)))) != 1:
        raise InputFileError(f"particles have different or non-square image sizes: {sorted(boxes)}")
    psize = np.unique(ds["blob/psize_A"])
    if len(psize) != 1 or psize[0] <= 0:
        raise InputFileError(f"particles must share one positive blob/psize_A, found {psize[:5]}")
    return next(iter(boxes))[0], float(psize[0])


SUBSET_FRACTION = 0.5  # cache only the images used when a rank needs less than this of a stack
PHASES = {  # how the log names the phases the job times
    "prepare": "preparing", "read_threads": "reading (thread-seconds, overlaps inserting)",
    "read_wait": "waiting for reads", "fft": "FFT (GPU)", "insertion": "insertion (GPU)",
    "inserting": "inserting (wall)", "reduction": "reduction", "finish": "finishing maps", "write": "writing results"}
GPU_READ_THREADS = 4  # batches read at once ahead of a GPU (on the H100 host one thread read 3.0 GB/s, four 12.3)


def _subsets(ctx: RunContext, part: Dataset) -> dict[Path, np.ndarray]:
    """Stacks of which these particles use so few images that caching just those saves space."""
    out = {}
    for rel, group in part.split_by("blob/path").items():
        source = ctx.project_path(rel).resolve()
        used = np.unique(group["blob/idx"].astype(np.int64))
        if len(used) < SUBSET_FRACTION * read_info(source).shape[0]:
            out[source] = used
    return out


def _read_batch(ctx: RunContext, part: Dataset, local: dict[Path, Path], subsets: dict[Path, np.ndarray] | None,
                out: np.ndarray) -> np.ndarray:
    """Images of a batch into ``out``, one read per stack (rows of a stack need not be
    adjacent), from the SSD cache's copies (compact subset copies are indexed through the
    image numbers they hold)."""
    paths = part["blob/path"]
    starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
    if len(starts) <= 1 or len(np.unique(paths)) == len(starts):  # each stack one run: read in place
        groups = [np.arange(a, b) for a, b in zip(starts, np.r_[starts[1:], len(part)], strict=True)]
    else:
        order = np.argsort(paths, kind="stable")
        cuts = np.flatnonzero(np.r_[True, paths[order][1:] != paths[order][:-1]])
        groups = np.split(order, cuts[1:])
    for rows in groups:
        source = ctx.project_path(paths[rows[0]]).resolve()
        idx = part["blob/idx"][rows].astype(np.int64)
        if subsets and source in subsets:  # a compact copy: its image i is subsets[source][i]
            idx = np.searchsorted(subsets[source], idx)
        run = rows[-1] - rows[0] == len(rows) - 1
        if run:
            read_images(local.get(source, source), idx, out=out[rows[0]:rows[-1] + 1])
        else:
            out[rows] = read_images(local.get(source, source), idx)
    return out


HALF_B_TAG = 0x4842  # world rank 1's half map B and its memory figures, to rank 0
DIRECTION_CHUNK = 4096  # particles (consecutive in the files) ordered by viewing direction at once


def direction_order(poses: np.ndarray, chunk: int = DIRECTION_CHUNK) -> np.ndarray:
    """A permutation that keeps chunks of consecutive particles together (their images
    stay near each other in the files) and orders each chunk by viewing direction, ring
    by ring over the sphere. Particles seen from nearby directions insert into nearly the
    same plane of the grid, so it stays in cache from one to the next: at box 128 on this
    machine insertion runs 10-20 % faster than in file order, where every particle
    touches a different plane of a grid far larger than the cache."""
    normal = rotvec_to_matrix(poses)[:, :, 2]
    rings = max(4, int(np.sqrt(chunk) / 2))
    theta = np.arccos(np.clip(normal[:, 2], -1.0, 1.0))
    phi = np.arctan2(normal[:, 1], normal[:, 0])
    ring = np.minimum((theta / np.pi * rings).astype(np.int64), rings - 1)
    along = np.where(ring % 2, -phi, phi)  # boustrophedon: the next ring starts where this one ended
    block = np.arange(len(poses)) // chunk
    return np.lexsort((along, ring, block))


def _insert_batch(rec: Reconstructor, part: Dataset, images: np.ndarray, align_scale: np.ndarray | None,
                  use_ctf: bool, sym: np.ndarray) -> None:
    shifts = part["alignments3D/shift"].astype(np.float64)
    if align_scale is not None:
        shifts = shifts * np.where(align_scale > 0, align_scale, 1.0)[:, None]
    ctf = CtfParams(**{k: part[f"ctf/{k}"] if f"ctf/{k}" in part else np.zeros(len(part))
                       for k in ("df1_A", "df2_A", "df_angle_rad", "accel_kv", "cs_mm", "amp_contrast",
                                 "phase_shift_rad")}) if use_ctf else None
    sign = part["blob/sign"] if "blob/sign" in part else np.ones(len(part))
    rec.insert(images, rotvec_to_matrix(part["alignments3D/pose"]), shifts, ctf, sign, part["alignments3D/split"],
               extra_rots=sym if len(sym) > 1 else None)


def _insert_all(ctx: RunContext, p: dict, rec: Reconstructor, mine: Dataset, done: int, align_scale, use_ctf: bool,
                sym: np.ndarray, ckpt: Checkpoint, local: dict[Path, Path], subsets: dict[Path, np.ndarray],
                clock: dict[str, float], batch_size: int, read_ahead: int) -> int:
    """Insert this rank's particles from ``done`` on, checkpointing as it goes. The next
    ``read_ahead`` batches are read by as many threads while this one is inserted (the
    numba kernel releases the GIL; the GPU path returns as soon as its work is queued)."""
    last_ckpt = time.monotonic()
    starts = list(range(done, len(mine), batch_size))
    lock = threading.Lock()

    def batch(b0: int) -> Dataset:
        return mine.take(np.arange(b0, min(len(mine), b0 + batch_size)))

    def read(b0: int) -> np.ndarray:
        t0 = time.perf_counter()
        part = batch(b0)
        images = _read_batch(ctx, part, local, subsets, rec.host_buffer(len(part)))
        with lock:
            clock["read_threads"] += time.perf_counter() - t0
        return images

    rec.reserve_host_buffers(read_ahead + 2, batch_size)
    with ThreadPoolExecutor(max_workers=read_ahead, thread_name_prefix="read-ahead") as pool:
        try:
            pending = deque(pool.submit(read, b0) for b0 in starts[:read_ahead])
            for i, b0 in enumerate(starts):
                t0 = time.perf_counter()
                images = pending.popleft().result()
                clock["read_wait"] += time.perf_counter() - t0
                if i + read_ahead < len(starts):
                    pending.append(pool.submit(read, starts[i + read_ahead]))
                part = batch(b0)
                _insert_batch(rec, part, images, align_scale[b0:b0 + len(part)] if align_scale is not None else None,
                              use_ctf, sym)
                done = b0 + len(part)
                ctx.progress(done, len(mine), "particles inserted" + (" on rank 0" if ctx.size > 1 else ""))
                if p["checkpoint_every_s"] > 0 and time.monotonic() - last_ckpt > p["checkpoint_every_s"] \
                        and done < len(mine):
                    ckpt.save(to_numpy(rec.acc), done)
                    last_ckpt = time.monotonic()
                if p["checkpoint_every_s"] > 0 and done < len(mine) and ctx.stop_requested():
                    ckpt.save(to_numpy(rec.acc), done)
                    raise StopRequested(f"rank {ctx.rank} saved its checkpoint at {done} of {len(mine)} particles")
        finally:  # before the pool waits for its readers: none may wait for a buffer that never comes back
            rec.release_host_buffers()
    return done


def _reduced_where(device: int | None, node_sum: NodeSum | None) -> str:
    if node_sum is not None:
        return "in shared memory" + (" and across nodes" if node_sum.leaders_across_nodes else "")
    return "on the device" if device is not None and mpi_takes_device_buffers() else "through host memory"


def _check_device_memory(ctx: RunContext, box: int, pad: int, batch: int, device: int) -> None:
    """Refuse, before any work, a reconstruction that cannot fit on this rank's GPU,
    saying what it needs."""
    from ..compute.reconstruct_cuda import free_and_total_bytes

    devices = ctx.comm.allgather(device)  # also: no rank has allocated yet
    refusal = memory_refusal(box, pad, batch, devices, ctx.rank, *free_and_total_bytes())
    if refusal:
        raise UserError(refusal)


def _cores_each(ranks: int) -> int:
    """The cores this rank may run on, shared out among ``ranks`` ranks finishing maps
    side by side (at least one)."""
    return max(1, len(os.sched_getaffinity(0)) // ranks)


def _finish_second_half(ctx: RunContext, rec: Reconstructor, total: np.ndarray, wiener: float) -> None:
    """World rank 1, holding half set 1's total: half map B, sent to rank 0 with this
    rank's peak memory and proportional share (its finishing comes after the gather)."""
    half_b = np.ascontiguousarray(rec.map_of(total[1], wiener, threads=_cores_each(2)), np.float32)
    ctx.comm.send((peak_rss_mb(), pss_mb()), dest=0, tag=HALF_B_TAG)
    ctx.comm.Send(half_b, dest=0, tag=HALF_B_TAG)


def _finish_first_half_and_full(ctx: RunContext, rec: Reconstructor, node_sum: NodeSum, total: np.ndarray,
                                wiener: float, peaks: list, shares: list) -> tuple[np.ndarray, ...]:
    """World rank 0, holding half set 0's total: half map A beside rank 1's half map B,
    then half set 1 added into half set 0 and the full map from that, on every core."""
    half_a = rec.map_of(total[0], wiener, threads=_cores_each(2))
    node_sum.fold_second_half()
    peak, share = wait_sleeping(ctx.comm.irecv(source=1, tag=HALF_B_TAG))
    peaks[1], shares[1] = max(peaks[1], peak), max(shares[1], share)
    half_b = np.empty_like(half_a)
    wait_sleeping(ctx.comm.Irecv(half_b, source=1, tag=HALF_B_TAG))
    full = rec.map_of(total[0], wiener)  # every core: rank 1 is done
    return half_a, half_b, full



def run_homo_reconstruct(ctx: RunContext) -> None:
    t_start = time.perf_counter()
    p = ctx.params
    use_ctf = not p["ignore_ctf"]
    ds = ctx.load_input("particles")
    _check_fields(ctx, ds, use_ctf)
    if not len(ds):
        raise InputFileError("no particles connected")
    ds = ds.take(np.lexsort((ds["blob/idx"], ds["blob/path"])))  # file order: sequential reads
    box, psize = _check_stacks(ctx, ds)
    sym = symmetry_matrices(p["symmetry"])
    xp = get_xp("auto" if p["compute_num_gpus"] else "numpy")
    device = use_device(local_rank(ctx.comm)) if xp is not np else None
    if device is not None and box % 2:
        raise UserError(f"particles have an odd box ({box} px): the GPU path reconstructs even boxes only; "
                        "run with compute_num_gpus 0 (the CPU path takes any box), or extract with an even box")
    mine = ds.take(np.array_split(np.arange(len(ds)), ctx.size)[ctx.rank])
    mine = mine.take(direction_order(mine["alignments3D/pose"]))
    ctx.log(f"{len(ds)} particles, box {box}, {psize:.3f} Å/px, symmetry {p['symmetry']}, padding "
            f"{p['padding_factor']}, {ctx.size} rank(s) on {backend_name(xp)}"
            + (f" (GPU {device})" if device is not None else ""))

    batch_size, read_ahead = p["batch_size"], 1
    if device is not None:
        batch_size, read_ahead = gpu_batch_size(box, batch_size), GPU_READ_THREADS
        _check_device_memory(ctx, box, p["padding_factor"], batch_size, device)
    rec = Reconstructor(xp, box, psize, pad=p["padding_factor"], gridding_iterations=p["gridding_iterations"])
    node_sum = None
    if device is None:  # CPU ranks of a node accumulate in node shared memory (jobrun/node_sum.py)
        node_sum = NodeSum(ctx.comm, rec.acc.shape, live_radius=rec.live_radius)
        rec.acc = node_sum.local
    ckpt = Checkpoint(ctx.job_dir, ctx.rank, signature(mine["uid"], box, psize, p["symmetry"], rec.acc.shape,
                                                       p["padding_factor"], use_ctf))
    done = 0
    saved = ckpt.load() if p["checkpoint_every_s"] > 0 else None
    if saved is not None:
        rec.acc[...] = xp.asarray(saved[0])
        done = saved[1]
        ctx.log(f"resumed from checkpoint: {done} of {len(mine)} particles already inserted", all_ranks=True)
    align_scale = (mine["alignments3D/psize_A"] / mine["blob/psize_A"]) if "alignments3D/psize_A" in mine else None
    todo = mine.take(np.arange(done, len(mine)))
    stacks = sorted({ctx.project_path(x) for x in np.unique(todo["blob/path"]).tolist()})
    subsets = _subsets(ctx, todo) if len(todo) and ctx.cache_enabled else {}
    clock = {"prepare": time.perf_counter() - t_start, "read_threads": 0.0, "read_wait": 0.0}
    t0 = time.perf_counter()
    with ctx.cached(stacks, subsets) as local:
        done = _insert_all(ctx, p, rec, mine, done, align_scale, use_ctf, sym, ckpt, local, subsets, clock,
                           batch_size, read_ahead)
    if device is not None:
        xp.cuda.get_current_stream().synchronize()
        clock.update(rec.device.times.seconds())
    clock["inserting"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    total = node_sum.total() if node_sum is not None else reduce_sum(ctx.comm, rec.acc)
    clock["reduction"] = time.perf_counter() - t0
    peaks = ctx.comm.allgather(peak_rss_mb())  # the other ranks are done growing
    shares = ctx.comm.allgather(pss_mb())  # each rank's proportional share, the grids still held
    apart = node_sum is not None and node_sum.halves_apart
    if node_sum is not None:  # the other ranks' grids go back while rank 0 finishes
        if not ctx.is_root:
            rec.acc = None
        node_sum.keep_total_only()
    if apart and ctx.rank == 1:
        _finish_second_half(ctx, rec, total, p["wiener_constant"])
    if not ctx.is_root:
        if node_sum is not None:
            node_sum.free()  # collective over the node: rank 0 frees after finishing
        ctx.hold(rec, node_sum, total)
        return
    # rank 0 finishes the maps with every core of its node, the others waiting in a
    # sleeping barrier (node_sum.free): box 128 on 2 cores, 2.2 s, against 2.7 s with the
    # three maps spread over the ranks and 4.2 s beside a rank spinning in MPI_Barrier.
    # With the half sets' totals apart (one node), rank 1 finishes half map B on its share
    # of the cores meanwhile, and rank 0 never holds both half sets with a map's buffers
    ctx.log("Finishing maps")
    t0 = time.perf_counter()
    if apart:
        half_a, half_b, full = _finish_first_half_and_full(ctx, rec, node_sum, total, p["wiener_constant"],
                                                           peaks, shares)
    else:
        rec.acc = xp.asarray(total)
        half_a, half_b, full = rec.finish(p["wiener_constant"])
    clock["finish"] = time.perf_counter() - t0
    finish_share = pss_mb()  # before the accumulators go
    if node_sum is not None:
        node_sum.free()
    curve = fsc(half_a, half_b, psize)
    res143, res05 = curve.resolution_A(0.143), curve.resolution_A(0.5)
    ctx.log(f"FSC between half maps: {res143:.2f} Å at 0.143, {res05:.2f} Å at 0.5")
    t0 = time.perf_counter()
    uid = ctx.jobfile.job_uid
    plot_fsc(ctx.job_dir / f"{uid}_fsc.svg", {"half maps": curve}, f"{uid} {p['symmetry']}, {len(ds)} particles")
    write_fsc_xml(ctx.job_dir / f"{uid}_fsc.xml", curve, f"{uid} half-map FSC")
    columns = {}
    for prefix, vol in (("map", full), ("map_half_A", half_a), ("map_half_B", half_b)):
        columns.update(write_volume_result(ctx, prefix, vol, psize))
    clock["write"] = time.perf_counter() - t0
    ctx.log("Seconds on rank 0: " + ", ".join(f"{PHASES.get(k, k)} {v:.2f}" for k, v in clock.items())
            + (f"; reduction across {ctx.size} ranks "
               f"{_reduced_where(device, node_sum)}"
               if ctx.size > 1 else ""))
    peaks[0] = peak_rss_mb()
    shares[0] = max(shares[0], finish_share)
    summary = {"fsc_0143_A": res143, "fsc_05_A": res05, "num_particles": len(ds), "box": box, "psize_A": psize,
               "peak_rss_mb": [round(x, 1) for x in peaks], "pss_mb": [round(x, 1) for x in shares],
               "symmetry": p["symmetry"], "map": ctx.relpath(ctx.job_dir / f"{uid}_map.mrc"),
               "fsc_plot": ctx.relpath(ctx.job_dir / f"{uid}_fsc.svg"),
               "seconds": {k: round(v, 4) for k, v in clock.items()}}
    ctx.save_output("volume", Dataset.from_columns(columns), summary=summary)
    ctx.save_output("particles", ds.select([]))
    ctx.hold(rec, node_sum, total)  # the accumulators are freed after the job reports its end
