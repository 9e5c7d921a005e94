#!/usr/bin/env python
"""Submission and following cost of a SLURM lane, on a real single-node SLURM.

Queues N jobs held by --begin (so they stay pending), lets the master submit them, then
follows them for a while, with --foreign jobs of user nobody pending in the same queue
(submitted with sbatch --uid, so the benchmark runs as root, as the dev SLURM does).
Prints jobs submitted per second and the master's CPU time per job, beside the bound: N
bare ``sbatch`` calls of the same script in the same run; and the cost of one status
query as the lane asks it (cryohpc's ids only) beside the whole-queue query the lanes
used before (``squeue -h -t all``), rows returned and seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "plugins"))
os.environ.setdefault("CRYOHPC_PLUGINS", "cryohpc_testjobs")

from cryohpc.api import Api  # noqa: E402
from cryohpc.lanes import RunHandle  # noqa: E402
from cryohpc.scheduler import Scheduler  # noqa: E402

TEMPLATE = ("#!/bin/bash\n#SBATCH --job-name={{ job_name }}\n#SBATCH --output={{ job_log_path_abs }}\n"
            "#SBATCH --begin=now+1hour\n#SBATCH --mem=100M\n{{ run_cmd }}\necho $? > {{ exit_code_path }}\n")


def cpu_with_children() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--follow-s", type=float, default=10.0)
    parser.add_argument("--foreign", type=int, default=1000, help="another user's jobs in the queue (nobody's)")
    parser.add_argument("--queries", type=int, default=20, help="status queries timed per form")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["bash", str(ROOT / "scripts/dev-slurm.sh"), "up", str(tmp / "slurm")], check=True,
                       capture_output=True)
        os.environ["SLURM_CONF"] = str(tmp / "slurm" / "slurm.conf")
        foreign: list[str] = []
        try:
            foreign = [subprocess.run(["sbatch", "--parsable", "-J", "someone_else", "--begin=now+1hour",
                                       "--uid=nobody", "--gid=nogroup",
                                       "--mem=10M", "--wrap", "true"], capture_output=True, text=True,
                                      check=True).stdout.strip() for _ in range(args.foreign)]
            api = Api.init(tmp / "home", tmp / "projects", poll_interval_s=0.1)
            (api.instance.paths.home / "templates").mkdir()
            (api.instance.paths.home / "templates" / "held.sh.j2").write_text(TEMPLATE)
            (api.instance.paths.site_configs / "held.yaml").write_text(
                "lanes:\n  - name: held\n    type: cluster\n    kind: slurm\n    script_template: held.sh.j2\n"
                "    poll_interval_s: 2.0\n")
            project = api.create_project("bench")
            jobs = [project.create_job("test_sleep") for _ in range(args.jobs)]
            for j in jobs:
                j.queue(lane="held")
            sched = Scheduler(api.instance)
            lane = sched.lanes["held"]
            cpu0, t0 = time.process_time(), time.perf_counter()
            sched.step()
            submit_s, submit_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            cpu0, t0, passes = time.process_time(), time.perf_counter(), 0
            while time.perf_counter() - t0 < args.follow_s:
                sched.step()
                passes += 1
                time.sleep(0.1)
            follow_s, follow_cpu = time.perf_counter() - t0, time.process_time() - cpu0
            ids = [j.model.run.cluster_job_id for j in jobs]
            calls = dict(lane.runner.calls)  # before the query comparison below adds its own
            query = {}
            handles = [RunHandle.of(j.model) for j in jobs]
            for form, run in (("ours", lambda: len(lane.query(handles))),
                              ("whole queue", lambda: len(lane.kind.parse_status(lane.runner.run(
                                  "status", "squeue -h -t all -o '%i|%T|%r'"))))):
                t0, cpu0 = time.perf_counter(), cpu_with_children()
                rows = [run() for _ in range(args.queries)][-1]
                query[form] = (rows, (time.perf_counter() - t0) / args.queries,
                               (cpu_with_children() - cpu0) / args.queries)
            subprocess.run(["scancel", *ids], check=True)

            script = jobs[0].dir / "submit.sh"
            t0 = time.perf_counter()
            bare = [subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True,
                                   check=True).stdout.strip() for _ in range(args.jobs)]
            bare_s = time.perf_counter() - t0
            subprocess.run(["scancel", *bare], check=True)
        finally:
            if foreign:
                subprocess.run(["scancel", *foreign])
            subprocess.run(["bash", str(ROOT / "scripts/dev-slurm.sh"), "down", str(tmp / "slurm")])
    n = args.jobs
    print(f"{n} jobs to one SLURM lane (held pending), {args.foreign} foreign jobs pending in the same queue")
    print(f"submission by the master: {n / submit_s:7.1f} jobs/s  ({submit_cpu / n * 1e3:.1f} ms master CPU per job, "
          f"{calls['submit']} sbatch + {calls.get('find', 0)} squeue-by-name for idempotency)")
    print(f"bare sbatch, same script:  {n / bare_s:7.1f} jobs/s  (the bound: {n / submit_s / (n / bare_s):.0%} of it)")
    print(f"following {n} jobs for {follow_s:.0f} s: {passes} master passes, {calls['status']} squeue calls, "
          f"{follow_cpu / follow_s * 100:.1f}% of a core ({follow_cpu / passes / n * 1e6:.0f} µs CPU per job per pass)")
    for form, (rows, wall, cpu) in query.items():
        print(f"status query, {form:>11}: {rows:5d} rows, {wall * 1e3:6.1f} ms per query "
              f"({cpu * 1e3:.1f} ms CPU in squeue and the master's parse)")


if __name__ == "__main__":
    main()
