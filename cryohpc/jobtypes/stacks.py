"""restack_particles and downsample_particles: new particle stacks holding only the input's
particles, in input order (downsampled: Fourier-cropped or padded to a new box). After
either, the job that wrote the original stacks can be cleared and processing goes on
from the new ones (CryoSPARC's data cleanup guide and SSD cache guide recommend it).

Work is split by output stack: stack k holds particles k*S .. (k+1)*S-1 of the input and
is written by rank k mod size, reading through the node's SSD cache; every rank knows
every stack's name and contents, so rank 0 writes the ``.cs`` once all ranks are done.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..compute.io_mrc import read_images, read_info, write_stack
from ..dataset import Dataset
from ..errors import InputFileError
from ..jobrun.context import RunContext

BLOB_NEEDED = ("blob/path", "blob/idx", "blob/shape", "blob/psize_A")
STACK_DIR = "stacks"


def _read_in_order(ctx: RunContext, part: Dataset, local: dict[Path, Path], box: int) -> np.ndarray:
    """The images of ``part`` in its own order, one read per source stack."""
    out = np.empty((len(part), box, box), np.float32)
    paths = part["blob/path"]
    for rel in np.unique(paths):
        where = np.flatnonzero(paths == rel)
        source = ctx.project_path(rel).resolve()
        out[where] = read_images(local.get(source, source), part["blob/idx"][where].astype(np.int64))
    return out


def fourier_resize(images: np.ndarray, new_box: int) -> np.ndarray:
    """Crop (or zero-pad) each image's centred 2D spectrum to ``new_box``: downsampling
    without aliasing. Pixel values keep their scale (the mean of an image is unchanged)."""
    box = images.shape[-1]
    if new_box == box:
        return images.astype(np.float32)
    spec = np.fft.fftshift(np.fft.fft2(images), axes=(-2, -1))
    out = np.zeros((len(images), new_box, new_box), np.complex128)
    n = min(box, new_box)
    a, b = box // 2 - n // 2, new_box // 2 - n // 2
    out[:, b:b + n, b:b + n] = spec[:, a:a + n, a:a + n]
    return (np.fft.ifft2(np.fft.ifftshift(out, axes=(-2, -1))).real * (new_box / box) ** 2).astype(np.float32)


def _check(ctx: RunContext, ds: Dataset) -> int:
    missing = [f for f in BLOB_NEEDED if f not in ds]
    if missing:
        raise InputFileError(f"particles lack field(s) {', '.join(missing)}")
    if not len(ds):
        raise InputFileError("no particles connected")
    boxes = {tuple(s) for s in np.unique(ds["blob/shape"], axis=0).tolist()}
    if len(boxes) != 1 or len(set(next(iter(boxes)))) != 1:
        raise InputFileError(f"particles have different or non-square image sizes: {sorted(boxes)}")
    box = next(iter(boxes))[0]
    for rel in np.unique(ds["blob/path"]).tolist():
        path = ctx.project_path(rel)
        if not path.exists():
            raise InputFileError(f"blob/path {rel.decode()!r} points nowhere (no file {path})")
        if read_info(path).shape[1:] != (box, box):
            raise InputFileError(f"{path}: images are {read_info(path).shape[1:]}, blob/shape says {box}")
    return box


def _rewrite(ctx: RunContext, new_box: int | None, dtype, what: str) -> None:
    p = ctx.params
    ds = ctx.load_input("particles")
    box = _check(ctx, ds)
    new_box = new_box or box
    per = p["particles_per_stack"]
    starts = list(range(0, len(ds), per))
    uid = ctx.jobfile.job_uid
    out_dir = ctx.job_dir / STACK_DIR
    out_dir.mkdir(exist_ok=True)
    names = [out_dir / f"{uid}_{what}_{k:05d}.mrcs" for k in range(len(starts))]
    mine = list(range(ctx.rank, len(starts), ctx.size))
    scale = box / new_box
    ctx.log(f"{len(ds)} particles of box {box} into {len(starts)} stack(s) of up to {per}"
            + (f", box {new_box} ({ds['blob/psize_A'][0] * scale:.3f} Å/px)" if new_box != box else "")
            + (", float16" if dtype == np.float16 else "") + f", {ctx.size} rank(s)")
    needed = ds.take(np.concatenate([np.arange(starts[k], min(len(ds), starts[k] + per)) for k in mine])) \
        if mine else ds.take(np.arange(0))
    stacks = sorted({ctx.project_path(x) for x in np.unique(needed["blob/path"]).tolist()})
    with ctx.cached(stacks) as local:
        for i, k in enumerate(mine):
            part = ds.take(np.arange(starts[k], min(len(ds), starts[k] + per)))
            images = _read_in_order(ctx, part, local, box)
            if new_box != box:
                images = fourier_resize(images, new_box)
            write_stack(names[k], images, float(part["blob/psize_A"][0]) * scale, dtype=dtype)
            ctx.progress(i + 1, len(mine), "stacks written" + (" on rank 0" if ctx.size > 1 else ""))
    ctx.comm.Barrier()
    if not ctx.is_root:
        return
    blob = ds.select_prefixes(["blob"])
    cols = {f: blob[f] for f in blob.fields()}
    index = np.arange(len(ds))
    rel = [ctx.relpath(n).encode() for n in names]
    cols["blob/path"] = np.array([rel[i // per] for i in index])  # a new column: the names may be longer
    cols["blob/idx"] = (index % per).astype(np.uint32)
    cols["blob/shape"] = np.tile(np.array([new_box, new_box], np.uint32), (len(ds), 1))
    cols["blob/psize_A"] = (ds["blob/psize_A"] * scale).astype(np.float32)
    out = results = Dataset.from_columns(cols)
    if new_box != box:  # shifts are in pixels: say which pixels, so readers scale them
        full = ctx.load_input("particles", passthrough=True)
        if "alignments3D/shift" in full and "alignments3D/psize_A" not in full:
            align = full.select_prefixes(["alignments3D"]).subset_uids(ds["uid"])
            align = align.add_fields([("alignments3D/psize_A", "<f4")],
                                     {"alignments3D/psize_A": ds["blob/psize_A"].astype(np.float32)})
            results = out.innerjoin(align)
    ctx.save_output("particles", results, summary={"num_particles": len(ds), "box": new_box,
                                                   "psize_A": float(out["blob/psize_A"][0]), "stacks": len(names)})


def run_restack_particles(ctx: RunContext) -> None:
    _rewrite(ctx, None, np.float32, "restacked")


def run_downsample_particles(ctx: RunContext) -> None:
    p = ctx.params
    box = p["new_box"]
    if box % 2:
        raise InputFileError(f"new_box {box} must be even (Fourier cropping keeps the centre at box/2)")
    _rewrite(ctx, box, np.float16 if p["output_f16"] else np.float32, "downsampled")
