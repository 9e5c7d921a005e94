"""simulate_particles: projections of a volume with known poses, CTF and noise."""

from __future__ import annotations

import numpy as np

from ..compute.geometry import matrix_to_rotvec, random_rotations
from ..compute.io_mrc import write_stack
from ..compute.phantom import phantom
from ..compute.project import Projector
from ..compute.reconstruct import CtfParams
from ..compute.xp import backend_name, get_xp, use_device
from ..dataset import Dataset
from ..errors import InputFileError
from ..jobrun.context import RunContext
from .imports import CTF_FIELDS
from .star_convert import ALIGN3D_FIELDS
from .volumes import read_volume_result, write_volume_result

BATCH = 256


def run_simulate_particles(ctx: RunContext) -> None:
    p = ctx.params
    xp = get_xp("auto" if p["compute_num_gpus"] else "numpy")
    if xp is not np:
        use_device(0)
    if ctx.jobfile.inputs.get("volume"):
        vol, psize = read_volume_result(ctx, ctx.load_input("volume"), "map", "input volume")
        source = "the connected volume"
    else:
        psize = p["psize_A"]
        vol = phantom(p["box"], psize, seed=p["seed"], symmetry=p["phantom_symmetry"])
        source = f"a {p['phantom_symmetry']} phantom"
    if vol.ndim != 3 or len(set(vol.shape)) != 1:
        raise InputFileError(f"volume to project must be a cube, found shape {vol.shape}")
    box, n = vol.shape[0], p["n_particles"]
    if p["defocus_max_A"] < p["defocus_min_A"]:
        raise InputFileError(f"defocus_max_A ({p['defocus_max_A']}) is below defocus_min_A ({p['defocus_min_A']})")
    ctx.log(f"Simulating {n} particles of box {box} at {psize:.3f} Å/px from {source} ({backend_name(xp)})")

    rng = np.random.default_rng(p["seed"])
    rots = random_rotations(n, rng)
    shifts = rng.normal(0.0, p["shift_sigma_px"], (n, 2))
    mean_df = rng.uniform(p["defocus_min_A"], p["defocus_max_A"], n)
    astig = rng.uniform(0.0, p["astigmatism_A"], n)
    ctf = CtfParams(df1_A=mean_df + astig / 2, df2_A=mean_df - astig / 2, df_angle_rad=rng.uniform(0, np.pi, n),
                    accel_kv=np.full(n, p["accel_kv"]), cs_mm=np.full(n, p["cs_mm"]),
                    amp_contrast=np.full(n, p["amp_contrast"]), phase_shift_rad=np.zeros(n))
    split = rng.permutation(np.arange(n) % 2)

    projector = Projector(xp, vol, psize)
    out_dir = ctx.job_dir / "simulated"
    out_dir.mkdir(exist_ok=True)
    per = p["particles_per_stack"]
    paths = np.empty(n, dtype=object)
    noise_sigma = None
    for s0 in range(0, n, per):
        stack = []
        for b0 in range(s0, min(n, s0 + per), BATCH):
            sl = slice(b0, min(n, s0 + per, b0 + BATCH))
            imgs = projector.project(rots[sl], shifts[sl], ctf.take(sl) if p["ctf"] else None)
            if p["snr"] > 0:
                if noise_sigma is None:
                    noise_sigma = float(np.sqrt(imgs.var() / p["snr"]))
                imgs = imgs + rng.normal(0.0, noise_sigma, imgs.shape).astype(np.float32)
            stack.append(imgs)
        path = out_dir / f"stack_{s0 // per:04d}.mrcs"
        write_stack(path, np.concatenate(stack), psize)
        paths[s0 : s0 + per] = ctx.relpath(path)
        ctx.progress(min(n, s0 + per), n, "particles")

    ds = Dataset.from_columns({
        "blob/path": np.array([x.encode() for x in paths]),
        "blob/idx": (np.arange(n) % per).astype(np.uint32),
        "blob/shape": np.tile(np.array([box, box], np.uint32), (n, 1)),
        "blob/psize_A": np.full(n, psize, np.float32),
        "blob/sign": np.ones(n, np.float32),
        "blob/import_sig": np.zeros(n, np.uint64),
    }).add_fields(CTF_FIELDS + ALIGN3D_FIELDS)
    ds["ctf/type"] = np.full(n, b"simulated")
    for name in ("df1_A", "df2_A", "df_angle_rad", "accel_kv", "cs_mm", "amp_contrast", "phase_shift_rad"):
        ds[f"ctf/{name}"] = getattr(ctf, name)
    ds["ctf/scale"] = 1.0
    ds["ctf/anisomag"] = np.tile(np.array([1, 0, 0, 1], np.float32), (n, 1))
    ds["alignments3D/pose"] = matrix_to_rotvec(rots).astype(np.float32)
    ds["alignments3D/shift"] = shifts.astype(np.float32)
    ds["alignments3D/psize_A"] = psize
    ds["alignments3D/split"] = split
    ds["alignments3D/weight"] = 1.0
    ds["alignments3D/class_posterior"] = 1.0
    if not p["ctf"]:
        ds = ds.drop_fields(lambda f: f.startswith("ctf/"))
    ctx.save_output("particles", ds, summary={"noise_sigma": noise_sigma or 0.0, "snr": p["snr"]})
    truth = Dataset.from_columns(write_volume_result(ctx, "map", vol, psize, name="true_volume"))
    ctx.save_output("true_volume", truth)
