"""RELION as a peer: simulate particles with ``relion_project --ctf`` from a known map and
reconstruct them with ``relion_reconstruct --ctf``. Used by the tests and the benchmark."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cryohpc.compute.io_mrc import write_volume
from cryohpc.compute.io_star import write_star
from cryohpc.compute.phantom import phantom


def relion_available() -> bool:
    return shutil.which("relion_project") is not None and shutil.which("relion_reconstruct") is not None


@dataclass
class RelionData:
    truth: np.ndarray
    map_path: Path
    star: Path  # particles written by relion_project (import this)
    psize_A: float
    n: int


def relion_simulate(folder: Path, box: int, psize_A: float, n: int, noise_sigma: float, seed: int = 0,
                    timeout_s: float = 1800, truth: np.ndarray | None = None) -> RelionData:
    """Projections of ``truth`` (default: the phantom) by relion_project with CTF, shifts
    and white noise (none at ``noise_sigma`` 0)."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    truth = phantom(box, psize_A, seed=seed) if truth is None else truth
    map_path = folder / "truth.mrc"
    write_volume(map_path, truth, psize_A)
    rng = np.random.default_rng(seed)
    df = rng.uniform(10000, 25000, n)
    write_star(folder / "angles.star", {
        "optics": {"rlnOpticsGroup": np.array([1]), "rlnOpticsGroupName": np.array(["optics1"]),
                   "rlnVoltage": np.array([300.0]), "rlnSphericalAberration": np.array([2.7]),
                   "rlnAmplitudeContrast": np.array([0.1]), "rlnImagePixelSize": np.array([psize_A]),
                   "rlnImageSize": np.array([box]), "rlnImageDimensionality": np.array([2])},
        "particles": {
            "rlnAngleRot": rng.uniform(-180, 180, n),
            "rlnAngleTilt": np.degrees(np.arccos(rng.uniform(-1, 1, n))),
            "rlnAnglePsi": rng.uniform(-180, 180, n),
            "rlnOriginXAngst": rng.normal(0, 2 * psize_A, n), "rlnOriginYAngst": rng.normal(0, 2 * psize_A, n),
            "rlnDefocusU": df, "rlnDefocusV": df - rng.uniform(0, 400, n), "rlnDefocusAngle": rng.uniform(-90, 90, n),
            "rlnRandomSubset": (np.arange(n) % 2) + 1, "rlnOpticsGroup": np.ones(n, dtype=int),
            "rlnImageName": np.array([f"{i + 1:06d}@none.mrcs" for i in range(n)]),
        },
    })
    cmd = ["relion_project", "--i", str(map_path), "--o", str(folder / "particles"), "--ang",
           str(folder / "angles.star"), "--ctf", "--angpix", str(psize_A)]
    if noise_sigma > 0:
        cmd += ["--add_noise", "--white_noise", str(noise_sigma)]
    subprocess.run(cmd, cwd=folder, check=True, capture_output=True, timeout=timeout_s)
    return RelionData(truth=truth, map_path=map_path, star=folder / "particles.star", psize_A=psize_A, n=n)


def relion_reconstruct(data: RelionData, out: Path, ranks: int = 1, timeout_s: float = 3600,
                       iterations: int | None = None) -> float:
    """Run relion_reconstruct --ctf (under its MPI build for ranks > 1; ``iterations``: its
    gridding-correction ``--iter``, default 10); returns seconds."""
    cmd = ["relion_reconstruct", "--i", str(data.star), "--o", str(Path(out).resolve()), "--ctf", "--angpix", str(data.psize_A)]
    if iterations is not None:
        cmd += ["--iter", str(iterations)]
    env = dict(os.environ)
    if ranks > 1:
        cmd = ["/usr/bin/mpirun", "--oversubscribe", "-n", str(ranks), "relion_reconstruct_mpi", *cmd[1:]]
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=data.star.parent, check=True, capture_output=True, timeout=timeout_s, env=env)
    return time.perf_counter() - t0
