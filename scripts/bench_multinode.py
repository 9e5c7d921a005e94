#!/usr/bin/env python
"""homo_reconstruct over 1 and 2 nodes of a real multi-node SLURM (scripts/dev-slurm.sh
--nodes 2, started here in a temporary folder; root needed for its network namespaces),
at 1, 2 and 4 ranks on the same particles, as a user sees it (``job queue`` to
``completed``, a master process with the default settings) and by phase.

On these 2-core machines every "node" shares the same two cores, so the figure is the
cost of spreading, not a speed-up: the time in the reduction, the bytes each node's
leader sends across the network (one accumulator; ranks of a node sum in shared memory
first), and the efficiency t(1 rank) / (n × t(n ranks)). The load average is printed with
each point: these machines are shared.

    scripts/bench_multinode.py --box 64 --particles 20000
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_reconstruct import accumulator_mb  # noqa: E402

from cryohpc.api import Api  # noqa: E402
from cryohpc.compute.io_mrc import read_volume  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "dev-slurm.sh"
LANE = """lanes:
  - name: multi
    type: cluster
    kind: slurm
    script_template: slurm.sh.j2
    poll_interval_s: 0.5
    worker: {{cache_path: {ssd}}}
    custom_vars:
      - {{name: partition, type: str, default: batch}}
"""
POINTS = ((1, 1), (2, 1), (4, 1), (2, 2), (4, 2))  # (ranks, nodes)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def reconstruct(api, project, sim_uid: str, ranks: int, nodes: int) -> dict:
    job = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks, "compute_num_nodes": nodes})
    job.connect("particles", sim_uid, "particles")
    t0 = time.perf_counter()
    job.queue(lane="multi")
    status = job.wait(3600, poll_s=0.05)
    seconds = time.perf_counter() - t0
    assert status.value == "completed", job.model.errors_run
    summary = next(g.summary for g in job.model.outputs if g.name == "volume")
    vol = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
    return {"seconds": seconds, "phases": summary.get("seconds", {}), "vol": vol, "nodes": job.model.run.nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--box", type=int, default=64)
    parser.add_argument("--particles", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cluster = work / "cluster"
        up = subprocess.run(["bash", str(SCRIPT), "up", str(cluster), "--nodes", "2"], capture_output=True, text=True)
        if up.returncode:
            sys.exit(f"the multi-node SLURM did not start:\n{up.stdout}{up.stderr}")
        os.environ["SLURM_CONF"] = str(cluster / "slurm.conf")
        os.environ["PATH"] = f"{cluster / 'bin'}{os.pathsep}{os.environ['PATH']}"
        api = Api.init(work / "home", work / "projects")
        (api.instance.paths.site_configs / "multi.yaml").write_text(LANE.format(ssd=cluster / "local-ssd"))
        api.start_master()
        try:
            project = api.create_project("bench")
            sim = project.create_job("simulate_particles", params={"n_particles": args.particles, "box": args.box,
                                                                  "psize_A": 2.0, "snr": 0.5})
            sim.queue()
            assert sim.wait(3600).value == "completed", sim.model.errors_run
            acc_mb = accumulator_mb(args.box)
            print(f"== box {args.box}, {args.particles:,} particles; accumulator {acc_mb:.0f} MB per node")
            first = None
            for ranks, nodes in POINTS:
                reconstruct(api, project, sim.uid, ranks, nodes)  # once to fill the nodes' SSD caches
                r = reconstruct(api, project, sim.uid, ranks, nodes)
                first = first or r
                eff = first["seconds"] / (ranks * r["seconds"])
                sent = acc_mb if nodes > 1 else 0.0
                diff = float(np.abs(r["vol"] - first["vol"]).max() / np.abs(first["vol"]).max())
                print(f"  {ranks} rank(s) on {nodes} node(s) ({r['nodes']}): {r['seconds']:6.2f} s queue -> "
                      f"completed, efficiency {eff:4.0%}, reduction {r['phases'].get('reduction', 0):.2f} s, "
                      f"{sent:.0f} MB sent across nodes per node, map vs 1 rank {diff:.1e}; load {load()}")
                print("      phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in r["phases"].items()))
        finally:
            api.stop_master()
            subprocess.run(["bash", str(SCRIPT), "down", str(cluster)], capture_output=True)


if __name__ == "__main__":
    main()
