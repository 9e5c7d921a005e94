"""Run functions of the import job types (worker side)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..compute.io_mrc import MrcInfo, read_info, read_volume, write_volume
from ..compute.io_star import ParticleTable, read_particle_star
from ..dataset import Dataset
from ..errors import DatasetError, InputFileError
from ..jobrun.context import RunContext
from ..text import plain_file_name
from .star_convert import ALIGN3D_FIELDS, alignments_from_star

CTF_FIELDS = [
    ("ctf/type", "S16"), ("ctf/exp_group_id", "<u4"), ("ctf/accel_kv", "<f4"), ("ctf/cs_mm", "<f4"),
    ("ctf/amp_contrast", "<f4"), ("ctf/df1_A", "<f4"), ("ctf/df2_A", "<f4"), ("ctf/df_angle_rad", "<f4"),
    ("ctf/phase_shift_rad", "<f4"), ("ctf/scale", "<f4"), ("ctf/scale_const", "<f4"), ("ctf/bfactor", "<f4"),
    ("ctf/shift_A", "<f4", (2,)), ("ctf/tilt_A", "<f4", (2,)), ("ctf/trefoil_A", "<f4", (2,)),
    ("ctf/tetra_A", "<f4", (4,)), ("ctf/anisomag", "<f4", (4,)),
]


def _import_sig(path: Path) -> int:
    st = path.stat()
    digest = hashlib.blake2b(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _find_stack(ref: str, meta: Path, blob_dir: str | None) -> Path:
    """Locate a stack named in metadata: in the data path given, else relative to the
    metadata file's folder or one of its parents (RELION paths are relative to the
    RELION project directory, usually a parent)."""
    name = Path(ref)
    candidates = []
    if blob_dir:
        candidates += [Path(blob_dir) / name.name, Path(blob_dir) / name]
    if name.is_absolute():
        candidates.append(name)
    else:
        base = meta.resolve().parent
        candidates += [base / name, *(p / name for p in list(base.parents)[:3])]
    for c in candidates:
        if c.is_file():
            return c
    looked = ", ".join(str(c.parent) for c in candidates)
    hint = "" if blob_dir else "; set particle_blob_path to the folder holding the stacks"
    raise InputFileError(f"{meta}: particle stack {ref!r} not found (looked in {looked}){hint}")


class StackLinker:
    """Links each source stack once into ``imported/`` and checks it against the rows."""

    def __init__(self, ctx: RunContext, meta: Path):
        self.ctx, self.meta = ctx, meta
        self.dest = ctx.job_dir / "imported"
        self.dest.mkdir(exist_ok=True)
        self.infos: dict[str, tuple[MrcInfo, str, int]] = {}

    def link(self, ref: str) -> tuple[MrcInfo, str, int]:
        if ref in self.infos:
            return self.infos[ref]
        src = _find_stack(ref, self.meta, self.ctx.params.get("particle_blob_path"))
        info = read_info(src)
        sig = _import_sig(src)
        link = self.dest / f"{sig:016x}_{plain_file_name(src.name)}"
        if not link.exists():
            os.symlink(src.resolve(), link)
        out = (info, self.ctx.relpath(self.ctx.job_dir) + f"/imported/{link.name}", sig)
        self.infos[ref] = out
        return out


def _blob_columns(ctx: RunContext, meta: Path, refs: list[str], idx: np.ndarray, psize: np.ndarray | None):
    linker = StackLinker(ctx, meta)
    uniq, inverse = np.unique(np.asarray(refs, dtype=object).astype(str), return_inverse=True)
    paths, sigs, shapes, header_psize = [], [], [], []
    for i, ref in enumerate(uniq.tolist()):
        info, rel, sig = linker.link(ref)
        used = idx[inverse == i]
        if used.size and (used.min() < 0 or used.max() >= info.shape[0]):
            bad = int(used.max() if used.max() >= info.shape[0] else used.min())
            raise InputFileError(
                f"{meta}: image index {bad + 1} of stack {ref!r} is out of range (the stack holds {info.shape[0]} images)"
            )
        paths.append(rel)
        sigs.append(sig)
        shapes.append(info.shape[1:])
        header_psize.append(info.psize_A)
        ctx.progress(i + 1, len(uniq), "stacks checked")
    if len({s for s in shapes}) > 1:
        raise InputFileError(f"{meta}: stacks have different image sizes {sorted(set(shapes))}")
    n = len(refs)
    override = ctx.params.get("psize_A")
    if override:
        psize = np.full(n, override, dtype=np.float32)
    elif psize is None:
        hp = np.asarray(header_psize)[inverse]
        if np.any(hp <= 0):
            raise InputFileError(f"{meta}: no pixel size in the metadata or the MRC headers; set psize_A")
        psize = hp
    cols = {
        "blob/path": np.asarray(paths, dtype=bytes)[inverse],
        "blob/idx": idx.astype(np.uint32),
        "blob/shape": np.tile(np.asarray(shapes[0], dtype=np.uint32), (n, 1)),
        "blob/psize_A": psize.astype(np.float32),
        "blob/sign": np.full(n, -1.0 if ctx.params.get("flip_sign") else 1.0, dtype=np.float32),
        "blob/import_sig": np.asarray(sigs, dtype=np.uint64)[inverse],
    }
    return cols, psize


def _star_to_dataset(ctx: RunContext, table: ParticleTable) -> Dataset:
    (names,) = table.require("rlnImageName", purpose="blob/path and blob/idx")
    refs, idx = [], np.empty(len(names), dtype=np.int64)
    for i, name in enumerate(names):
        at, sep, stack = str(name).partition("@")
        if not sep or not at.strip().isdigit():
            raise InputFileError(f"{table.path}: row {i + 1}: rlnImageName {name!r} is not of the form N@stack.mrcs")
        idx[i] = int(at) - 1
        refs.append(stack)
    psize = None
    if table.has("rlnImagePixelSize"):
        psize = table.number("rlnImagePixelSize").astype(np.float32)
    elif table.has("rlnDetectorPixelSize", "rlnMagnification"):
        psize = (table.number("rlnDetectorPixelSize") * 1e4 / table.number("rlnMagnification")).astype(np.float32)
    blob, psize = _blob_columns(ctx, table.path, refs, idx, psize)
    n = len(names)
    df1, df2, angle = table.numbers("rlnDefocusU", "rlnDefocusV", "rlnDefocusAngle", purpose="ctf/df1_A, ctf/df2_A, ctf/df_angle_rad")

    def col(name: str, default: float) -> np.ndarray:
        return table.number(name).astype(np.float32) if table.has(name) else np.full(n, default, np.float32)

    ds = Dataset.from_columns(blob).add_fields(CTF_FIELDS + (ALIGN3D_FIELDS if _has_poses(ctx, table) else []))
    ds["ctf/type"] = np.full(n, b"imported")
    ds["ctf/exp_group_id"] = table.number("rlnOpticsGroup").astype(np.uint32) if table.has("rlnOpticsGroup") else 0
    ds["ctf/accel_kv"] = col("rlnVoltage", ctx.params["accel_kv"])
    ds["ctf/cs_mm"] = col("rlnSphericalAberration", ctx.params["cs_mm"])
    ds["ctf/amp_contrast"] = col("rlnAmplitudeContrast", ctx.params["amp_contrast"])
    ds["ctf/df1_A"] = df1.astype(np.float32)
    ds["ctf/df2_A"] = df2.astype(np.float32)
    ds["ctf/df_angle_rad"] = np.deg2rad(angle.astype(np.float64)).astype(np.float32)
    ds["ctf/phase_shift_rad"] = np.deg2rad(col("rlnPhaseShift", 0.0))
    ds["ctf/scale"] = col("rlnCtfScalefactor", 1.0)
    ds["ctf/bfactor"] = col("rlnCtfBfactor", 0.0)
    ds["ctf/anisomag"] = np.tile(np.array([1, 0, 0, 1], np.float32), (n, 1))
    if "alignments3D/pose" in ds:
        for name, values in alignments_from_star(table, psize).items():
            ds[name] = values
    return ds


def _has_poses(ctx: RunContext, table: ParticleTable) -> bool:
    return not ctx.params.get("ignore_poses") and table.has("rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi")


def _cs_to_dataset(ctx: RunContext, meta: Path) -> Dataset:
    ds = Dataset.load(meta)
    for f in ("blob/path", "blob/idx"):
        if f not in ds:
            raise InputFileError(f"{meta}: has no field {f!r}; cannot locate the particle images")
    existing = ds["blob/psize_A"] if "blob/psize_A" in ds else None
    try:
        refs = ds.strings("blob/path")
    except DatasetError as err:
        raise InputFileError(f"{meta}: {err}") from None
    blob, _ = _blob_columns(ctx, meta, refs, ds["blob/idx"].astype(np.int64), existing)
    keep = ds.drop_fields([f for f in ds.fields() if f.startswith("blob/")])
    keep = keep.add_fields([(k, v.dtype, v.shape[1:]) if v.ndim > 1 else (k, v.dtype) for k, v in blob.items()], blob)
    if ctx.params.get("ignore_poses"):
        keep = keep.drop_fields(lambda f: f.startswith("alignments"))
    return keep


def run_import_particles(ctx: RunContext) -> None:
    meta = Path(ctx.params["particle_meta_path"])
    ctx.log(f"Importing particles from {meta}")
    if meta.suffix == ".cs":
        rows = len(Dataset.load(meta))
        ds = _cs_to_dataset(ctx, meta) if rows else None
    else:
        table = read_particle_star(meta)
        rows = len(table)
        ds = _star_to_dataset(ctx, table) if rows else None
    if ds is None:  # an empty import would make a job whose output feeds nothing
        raise InputFileError(f"{meta}: holds no particles (0 rows); nothing to import")
    ctx.log(f"{len(ds)} particles, results: {', '.join(ds.prefixes())}")
    ctx.save_output("imported_particles", ds)


def run_import_volume(ctx: RunContext) -> None:
    src = Path(ctx.params["volume_path"])
    kind = ctx.params["volume_type"]
    data, header_psize = read_volume(src)
    if data.ndim != 3 or len(set(data.shape)) != 1:
        raise InputFileError(f"{src}: expected a cubic 3D volume, found shape {data.shape}")
    psize = ctx.params.get("psize_A") or header_psize
    if not psize or psize <= 0:
        raise InputFileError(f"{src}: the MRC header has no pixel size; set psize_A")
    dest_dir = ctx.job_dir / "imported"
    dest_dir.mkdir(exist_ok=True)
    dest = dest_dir / f"{ctx.jobfile.job_uid}_{plain_file_name(src.stem)}.mrc"
    write_volume(dest, data, psize)
    ds = Dataset.from_columns({
        f"{kind}/path": [ctx.relpath(dest)],
        f"{kind}/shape": np.array([data.shape], dtype=np.uint32),
        f"{kind}/psize_A": np.array([psize], dtype=np.float32),
    })
    ctx.log(f"Imported {kind} of box {data.shape[0]} at {psize:.3f} Å/px")
    ctx.save_output("imported_volume_1", ds)
