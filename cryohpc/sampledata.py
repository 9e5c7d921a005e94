"""Small synthetic inputs for the quickstart and tests: MRC stacks with a RELION 3.1 STAR
file, and a volume. Images are noisy Gaussian blobs with known metadata; the physically
faithful simulation is the ``simulate_particles`` job type's business."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .compute.io_mrc import write_stack, write_volume
from .compute.io_star import write_star


@dataclass
class SampleParticles:
    star: Path
    stacks: list[Path]
    n: int
    box: int
    psize_A: float
    defocus_u_A: np.ndarray
    angles_deg: np.ndarray  # (n, 3) rot, tilt, psi
    origin_A: np.ndarray  # (n, 2)


def write_sample_particles(root: Path, n: int = 100, box: int = 32, psize_A: float = 2.0, n_stacks: int = 2,
                           seed: int = 0, optics: bool = True) -> SampleParticles:
    """Stacks under ``root/Particles/`` and ``root/particles.star`` naming them relative to
    ``root`` (as RELION does from its project directory)."""
    rng = np.random.default_rng(seed)
    (root / "Particles").mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[:box, :box] - box / 2
    per = -(-n // n_stacks)
    names, stacks = [], []
    for s in range(n_stacks):
        count = min(per, n - s * per)
        centers = rng.normal(0, box / 10, size=(count, 2))
        imgs = np.exp(-((x[None] - centers[:, :1, None]) ** 2 + (y[None] - centers[:, 1:, None]) ** 2) / (2 * (box / 8) ** 2))
        imgs = imgs + rng.normal(0, 0.3, imgs.shape)
        rel = f"Particles/stack_{s:03d}.mrcs"
        write_stack(root / rel, imgs.astype(np.float32), psize_A)
        stacks.append(root / rel)
        names += [f"{i + 1:06d}@{rel}" for i in range(count)]
    dfu = rng.uniform(8000, 25000, n)
    angles = np.stack([rng.uniform(-180, 180, n), rng.uniform(0, 180, n), rng.uniform(-180, 180, n)], 1)
    origin = rng.normal(0, 2, (n, 2))
    particles = {
        "rlnImageName": np.array(names),
        "rlnDefocusU": dfu,
        "rlnDefocusV": dfu - rng.uniform(0, 500, n),
        "rlnDefocusAngle": rng.uniform(-90, 90, n),
        "rlnAngleRot": angles[:, 0],
        "rlnAngleTilt": angles[:, 1],
        "rlnAnglePsi": angles[:, 2],
        "rlnOriginXAngst": origin[:, 0],
        "rlnOriginYAngst": origin[:, 1],
        "rlnRandomSubset": (np.arange(n) % 2) + 1,
    }
    blocks: dict[str, dict[str, np.ndarray]] = {}
    if optics:
        particles["rlnOpticsGroup"] = np.ones(n, dtype=int)
        blocks["optics"] = {
            "rlnOpticsGroup": np.array([1]), "rlnOpticsGroupName": np.array(["opticsGroup1"]),
            "rlnVoltage": np.array([300.0]), "rlnSphericalAberration": np.array([2.7]),
            "rlnAmplitudeContrast": np.array([0.1]), "rlnImagePixelSize": np.array([psize_A]),
            "rlnImageSize": np.array([box]), "rlnImageDimensionality": np.array([2]),
        }
    blocks["particles"] = particles
    star = root / "particles.star"
    write_star(star, blocks)
    return SampleParticles(star=star, stacks=stacks, n=n, box=box, psize_A=psize_A, defocus_u_A=dfu,
                           angles_deg=angles, origin_A=origin)


def write_sample_volume(path: Path, box: int = 32, psize_A: float = 2.0) -> np.ndarray:
    z, y, x = np.mgrid[:box, :box, :box] - box / 2
    vol = np.exp(-(x**2 + y**2 + (z / 1.5) ** 2) / (2 * (box / 8) ** 2)).astype(np.float32)
    write_volume(path, vol, psize_A)
    return vol


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write sample particle stacks, a STAR file and a volume.")
    parser.add_argument("dir", type=Path)
    parser.add_argument("--n", type=int, default=200, help="particles")
    parser.add_argument("--box", type=int, default=64, help="box size in pixels")
    args = parser.parse_args(argv)
    s = write_sample_particles(args.dir, n=args.n, box=args.box)
    write_sample_volume(args.dir / "volume.mrc", box=args.box)
    print(f"{s.star} ({s.n} particles in {len(s.stacks)} stacks, box {s.box}, {s.psize_A} Å/px)")


if __name__ == "__main__":
    main()
