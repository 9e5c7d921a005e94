#!/usr/bin/env python
"""homo_reconstruct against relion_reconstruct --ctf on the same particles, same run.

RELION simulates the particles (relion_project --ctf, white noise at the requested SNR)
from the built-in phantom; RELION (1 and 2 MPI ranks) and cryohpc (1 and 2 ranks,
through import_particles and homo_reconstruct on the local lane) reconstruct them.
Prints particles/second (whole reconstruction, reading included) and the FSC of each
map against the truth. With a usable GPU, first prints the GPU figures of bench_gpu.py
(insertion against its bounds, box 512 memory, end to end through the master).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relion_peer import relion_available, relion_reconstruct, relion_simulate  # noqa: E402

from cryohpc.api import Api  # noqa: E402
from cryohpc.compute.fsc import fsc  # noqa: E402
from cryohpc.compute.geometry import random_rotations  # noqa: E402
from cryohpc.compute.io_mrc import read_volume  # noqa: E402
from cryohpc.compute.phantom import phantom  # noqa: E402
from cryohpc.compute.project import Projector  # noqa: E402
from cryohpc.compute.xp import cupy_usable  # noqa: E402
from cryohpc.master import master_in_thread  # noqa: E402


def noise_sigma_for(box: int, psize: float, snr: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    imgs = Projector(np, phantom(box, psize, seed=seed), psize).project(random_rotations(200, rng),
                                                                       np.zeros((200, 2)), None)
    return float(np.sqrt(imgs.var() / snr))


def ours(data, work: Path, ranks: int) -> tuple[float, np.ndarray, float]:
    api = Api.init(work / f"home{ranks}", work / f"projects{ranks}", poll_interval_s=0.05)
    with master_in_thread(api.instance):
        project = api.create_project("bench")
        imp = project.create_job("import_particles", params={"particle_meta_path": str(data.star)})
        imp.queue()
        assert imp.wait(600).value == "completed", imp.model.errors_run
        rec = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks, "batch_size": 256,
                                                             "checkpoint_every_s": 0})
        rec.connect("particles", imp.uid, "imported_particles")
        rec.queue()
        assert rec.wait(3600).value == "completed", rec.model.errors_run
        times = rec.model.status_times
        seconds = times["completed"] - times["started"]
        rates = [e.rate for e in rec.events() if e.type == "progress" and e.rate]
        vol = read_volume(project.dir / rec.load_output("volume").strings("map/path")[0])[0]
        return seconds, vol, (rates[-1] * ranks if rates else float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--box", type=int, default=128)
    parser.add_argument("--psize", type=float, default=1.5)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--gpu-e2e-n", type=int, default=100000,
                        help="particles for the GPU end-to-end run (0: none); with a usable GPU only")
    parser.add_argument("--gpu-only", action="store_true", help="the GPU figures alone, no RELION comparison")
    args = parser.parse_args()
    if cupy_usable():
        from bench_gpu import report

        report(args.gpu_e2e_n, args.box)
    if args.gpu_only:
        return
    if not relion_available():
        sys.exit("RELION is not installed (apt-get install relion)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sigma = noise_sigma_for(args.box, args.psize, args.snr, seed=1)
        t0 = time.perf_counter()
        data = relion_simulate(work / "relion", args.box, args.psize, args.n, sigma, seed=1)
        print(f"{args.n:,} particles, box {args.box}, {args.psize} Å/px, SNR {args.snr} "
              f"(simulated by relion_project in {time.perf_counter() - t0:.1f} s)")
        rows = []
        for ranks in (1, 2):
            seconds = relion_reconstruct(data, work / f"relion{ranks}.mrc", ranks=ranks)
            rows.append((f"relion_reconstruct --ctf, {ranks} rank(s)", seconds,
                         read_volume(work / f"relion{ranks}.mrc")[0], float("nan")))
        for ranks in (1, 2):
            seconds, vol, insert_rate = ours(data, work, ranks)
            rows.append((f"cryohpc homo_reconstruct, {ranks} rank(s)", seconds, vol, insert_rate))
        print(f"{'reconstruction':40s} {'seconds':>8s} {'particles/s':>12s} {'FSC=0.5 vs truth':>17s} {'corr':>7s}")
        for name, seconds, vol, _ in rows:
            c = fsc(vol, data.truth, args.psize)
            print(f"{name:40s} {seconds:8.1f} {args.n / seconds:12.0f} {c.resolution_A(0.5):15.2f} Å "
                  f"{np.corrcoef(vol.ravel(), data.truth.ravel())[0, 1]:7.4f}")
        r1, r2, o1, o2 = (args.n / r[1] for r in rows)
        print(f"throughput ratio cryohpc / RELION: {o1 / r1:.2f}x at 1 rank, {o2 / r2:.2f}x at 2 ranks, "
              f"{o2 / r1:.2f}x (cryohpc 2 ranks vs RELION 1)")
        print(f"insertion alone (cryohpc): {rows[2][3]:.0f} particles/s at 1 rank, {rows[3][3]:.0f} at 2")


if __name__ == "__main__":
    main()
