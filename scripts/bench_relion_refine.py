#!/usr/bin/env python
"""relion_refine3d as a cryohpc job type (RELION 3.1 from Debian, 3 MPI ranks) on particles
simulated with known poses, queued to the local lane and to a real single-node SLURM
(scripts/dev-slurm.sh, started here in a temporary folder), beside homo_reconstruct from
the true poses: time from ``job queue`` to ``completed``, the median angular error of the
refined poses against the truth, and each map's FSC = 0.5 / 0.143 against the true volume.
The load average is printed with each point: these machines are shared.

    scripts/bench_relion_refine.py --box 64 --particles 2000 --psize 4.0
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cryohpc.api import Api
from cryohpc.compute.fsc import fsc
from cryohpc.compute.geometry import rotvec_to_matrix
from cryohpc.compute.io_mrc import read_volume

SCRIPT = Path(__file__).resolve().parent / "dev-slurm.sh"
LANE = """lanes:
  - {name: over, type: node, kind: local, oversubscribe: true}
  - {name: slurm, type: cluster, kind: slurm, script_template: slurm.sh.j2, poll_interval_s: 1,
     custom_vars: [{name: partition, type: str, default: debug}]}
"""


def angular_error_deg(refined, truth) -> np.ndarray:
    order = {u: i for i, u in enumerate(truth["uid"].tolist())}
    rows = np.array([order[u] for u in refined["uid"].tolist()])
    a = rotvec_to_matrix(refined["alignments3D/pose"].astype(float))
    b = rotvec_to_matrix(truth["alignments3D/pose"][rows].astype(float))
    return np.degrees(np.arccos(np.clip((np.einsum("nij,nij->n", a, b) - 1) / 2, -1, 1)))


def run(project, job_type: str, params: dict, connections: dict, lane: str) -> tuple[object, float]:
    job = project.create_job(job_type, params=params)
    for name, (uid, group) in connections.items():
        job.connect(name, uid, group)
    t0 = time.perf_counter()
    job.queue(lane=lane)
    status = job.wait(7200)
    seconds = time.perf_counter() - t0
    assert status.value == "completed", job.model.errors_run
    return job, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--particles", type=int, default=2000)
    parser.add_argument("--psize", type=float, default=4.0)
    parser.add_argument("--snr", type=float, default=0.5)
    parser.add_argument("--lanes", nargs="+", default=["over", "slurm"],
                        help="'over' is this machine with ranks allowed to share its cores")
    args = parser.parse_args()
    if os.getuid() == 0:  # Open MPI (RELION's) refuses root unless told; the jobs inherit this
        os.environ.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "slurm" in args.lanes:
            up = subprocess.run(["bash", str(SCRIPT), "up", str(work / "slurm")], capture_output=True, text=True)
            if up.returncode:
                sys.exit(f"SLURM did not start:\n{up.stdout}{up.stderr}")
            os.environ["SLURM_CONF"] = str(work / "slurm" / "slurm.conf")
        api = Api.init(work / "home", work / "projects")
        (api.instance.paths.site_configs / "slurm.yaml").write_text(LANE)
        api.start_master()
        try:
            project = api.create_project("refine")
            sim = project.create_job("simulate_particles", params={
                "n_particles": args.particles, "box": args.box, "psize_A": args.psize, "snr": args.snr, "seed": 3})
            sim.queue()
            assert sim.wait(3600).value == "completed", sim.model.errors_run
            truth_map = read_volume(project.dir / sim.load_output("true_volume").strings("map/path")[0])[0]
            truth = sim.load_output("particles")

            def resolution(job) -> str:
                vol = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
                c = fsc(vol, truth_map, args.psize)
                return f"FSC vs truth 0.5 at {c.resolution_A(0.5):.1f} Å, 0.143 at {c.resolution_A(0.143):.1f} Å"

            print(f"== box {args.box}, {args.particles:,} particles, {args.psize} Å/px (Nyquist "
                  f"{2 * args.psize:.1f} Å), SNR {args.snr}")
            homo, t = run(project, "homo_reconstruct", {"compute_num_ranks": 2}, {"particles": (sim.uid, "particles")},
                          "local")
            print(f"  homo_reconstruct from the true poses, 2 ranks: {t:6.1f} s; {resolution(homo)}")
            params = {"particle_diameter_A": 0.8 * args.box * args.psize, "compute_num_ranks": 3,
                      "healpix_order": 1, "local_healpix_order": 3, "offset_range_px": 3, "fast_convergence": True,
                      "initial_lowpass_A": 40}
            for lane in args.lanes:
                ref, t = run(project, "relion_refine3d", params,
                             {"particles": (sim.uid, "particles"), "volume": (sim.uid, "true_volume")}, lane)
                err = angular_error_deg(ref.load_output("particles"), truth)
                iters = sum("iteration" in line.lower() for line in ref.log_lines())
                print(f"  relion_refine3d, 3 ranks, lane {lane}: {t:6.1f} s queue -> completed; median angular "
                      f"error {np.median(err):.2f}° (90th percentile {np.percentile(err, 90):.2f}°); "
                      f"{resolution(ref)}; {iters} iteration lines; load "
                      f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        finally:
            api.stop_master()
            if "slurm" in args.lanes:
                subprocess.run(["bash", str(SCRIPT), "down", str(work / "slurm")], capture_output=True)


if __name__ == "__main__":
    main()
