#!/usr/bin/env python
"""homo_reconstruct against relion_reconstruct --ctf on the same particles, in the same run,
as a user sees it: from ``job queue`` to ``completed`` with a master process and the
instance's default settings (1 s poll; the local lane's warm workers for 1 and 2 ranks,
``--cold`` for none), beside the worker's phases.

RELION simulates the particles (relion_project --ctf, white noise at the requested SNR)
from the built-in phantom. RELION reconstructs them with one process and its defaults
(10 gridding iterations), and with ``--iter 0`` for reference; cryohpc imports them and
reconstructs with 1 and 2 ranks (defaults: 10 gridding iterations, SSD cache off as the
local lane has none). Each point prints the seconds, the ratio RELION / cryohpc, the
FSC = 0.5 resolution of every map against the truth, cryohpc's phases on rank 0 and the
peak memory per rank beside the accumulator the method needs. The load average is printed
with each point: these machines are shared.

    scripts/bench_reconstruct.py --points 64:10000 128:10000 128:20000 192:5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from relion_peer import relion_available, relion_reconstruct, relion_simulate  # noqa: E402

from cryohpc.api import Api  # noqa: E402
from cryohpc.compute.backproject import CHANNELS, grid_with_margin  # noqa: E402
from cryohpc.compute.fsc import fsc  # noqa: E402
from cryohpc.compute.geometry import random_rotations  # noqa: E402
from cryohpc.compute.io_mrc import read_volume  # noqa: E402
from cryohpc.compute.phantom import phantom  # noqa: E402
from cryohpc.compute.project import Projector  # noqa: E402
from cryohpc.compute.xp import cupy_usable  # noqa: E402
from cryohpc.lanes.siteconfig import WARM_RANKS_VAR  # noqa: E402

WARM_UP_S = 5.0  # a warm worker starts 1 s after a job's end and takes ~1.5 s to load everything


def noise_sigma_for(box: int, psize: float, snr: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    imgs = Projector(np, phantom(box, psize, seed=seed), psize).project(random_rotations(200, rng),
                                                                       np.zeros((200, 2)), None)
    return float(np.sqrt(imgs.var() / snr))


def accumulator_mb(box: int, pad: int = 2) -> float:
    """The two half-set grids a rank holds: the memory the method needs."""
    return 2 * grid_with_margin(pad * box) ** 3 * CHANNELS * 4 / 2**20


def ours(project, imported_uid: str, ranks: int) -> dict:
    rec = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks})
    rec.connect("particles", imported_uid, "imported_particles")
    t0 = time.perf_counter()
    rec.queue()
    status = rec.wait(3600, poll_s=0.02)
    seconds = time.perf_counter() - t0
    assert status.value == "completed", rec.model.errors_run
    out = rec.load_output("volume")
    summary = next(g.summary for g in rec.model.outputs if g.name == "volume")
    phases = dict(summary.get("seconds", {}))
    # what the worker does not time: launch, interpreter and MPI start, imports, reading the
    # inputs' .cs files, and the master reading the end (the master stamps "started" only
    # at its next poll, so status times cannot split this)
    phases["start-up and hand-over"] = seconds - sum(
        v for k, v in phases.items() if k in ("prepare", "inserting", "reduction", "finish", "write"))
    vol = read_volume(project.dir / out.strings("map/path")[0])[0]
    return {"seconds": seconds, "vol": vol, "phases": phases, "peak_mb": summary.get("peak_rss_mb", []),
            "pss_mb": summary.get("pss_mb", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", nargs="+", default=["64:10000", "128:10000", "128:20000", "192:5000"],
                        help="box:particles")
    parser.add_argument("--psize", type=float, default=1.5)
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--gpu-e2e-n", type=int, default=100000,
                        help="particles for the GPU end-to-end run (0: none); with a usable GPU only")
    parser.add_argument("--gpu-only", action="store_true", help="the GPU figures alone, no RELION comparison")
    parser.add_argument("--cold", action="store_true",
                        help="no warm workers on the local lane (as before they existed)")
    args = parser.parse_args()
    if cupy_usable():
        from bench_gpu import report

        report(args.gpu_e2e_n, 128)
    if args.gpu_only:
        return
    if not relion_available():
        sys.exit("RELION is not installed (apt-get install relion)")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.cold:
            os.environ[WARM_RANKS_VAR] = ""
        api = Api.init(work / "home", work / "projects")  # the defaults a user has
        api.start_master()
        try:
            project = api.create_project("bench")
            for point in args.points:
                box, n = (int(x) for x in point.split(":"))
                run_point(api, project, work / f"p{box}_{n}", box, n, args)
        finally:
            api.stop_master()


def run_point(api, project, folder: Path, box: int, n: int, args) -> None:
    sigma = noise_sigma_for(box, args.psize, args.snr, seed=1)
    data = relion_simulate(folder, box, args.psize, n, sigma, seed=1)
    imp = project.create_job("import_particles", params={"particle_meta_path": str(data.star)})
    imp.queue()
    assert imp.wait(600).value == "completed", imp.model.errors_run
    time.sleep(WARM_UP_S)  # the warm worker the import used is replaced before anything is timed
    print(f"\n== box {box}, {n:,} particles, {args.psize} Å/px, SNR {args.snr}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    relion = relion_reconstruct(data, folder / "relion.mrc")
    relion0 = relion_reconstruct(data, folder / "relion0.mrc", iterations=0)
    rows = {"relion_reconstruct (1 process, --iter 10)": (relion, read_volume(folder / "relion.mrc")[0]),
            "relion_reconstruct --iter 0": (relion0, read_volume(folder / "relion0.mrc")[0])}
    results = {}
    for ranks in (1, 2):
        results[ranks] = r = ours(project, imp.uid, ranks)
        rows[f"cryohpc, {ranks} rank(s), queue -> completed"] = (r["seconds"], r["vol"])
    for name, (seconds, vol) in rows.items():
        c = fsc(vol, data.truth, args.psize)
        print(f"  {name:44s} {seconds:7.2f} s  {relion / seconds:5.2f}x RELION  FSC=0.5 vs truth "
              f"{c.resolution_A(0.5):.2f} Å")
    one, two = results[1]["seconds"], results[2]["seconds"]
    print(f"  parallel efficiency at 2 ranks: {one / two / 2:.0%}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for ranks, r in results.items():
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items())
        peak = (f"; peak RSS per rank {', '.join(f'{x:.0f}' for x in r['peak_mb'])} MB, proportional share "
                f"(PSS) at its largest phase end {', '.join(f'{x:.0f}' for x in r['pss_mb'])} MB")
        print(f"  cryohpc {ranks} rank(s) phases (s): {phases}{peak} (accumulator {accumulator_mb(box):.0f} MB)")


if __name__ == "__main__":
    main()
