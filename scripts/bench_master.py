#!/usr/bin/env python
"""Does the master's cost grow with history? Idle CPU and a trivial job's queue→done with
100, 10,000 and 100,000 jobs in the database.

Each database holds finished jobs (history), 200 jobs the master must look at every pass
(queued behind a parent still being built: ``waiting_inputs``) and one project. The master
runs as users run it (``cryohpc master run`` in its own process, the default 1 s poll);
its CPU time is read from ``/proc`` over an idle window, then a ``test_sleep`` job of 0 s is
queued and timed from ``queue`` returning to the database saying ``completed``, as a
user polling ``job show`` sees it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "plugins"))
os.environ.setdefault("CRYOHPC_PLUGINS", "cryohpc_testjobs")
os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "plugins"), os.environ.get("PYTHONPATH", "")])

from cryohpc.api import Api  # noqa: E402
from cryohpc.model import Job, OutputGroup, OutputResult  # noqa: E402
from cryohpc.status import JobStatus, QueueStatus  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def fill(api: Api, project_uid: str, history: int, active: int) -> None:
    """Write ``history`` finished jobs and ``active`` queued ones straight into the store
    (creating 100,000 jobs through the builder would take the benchmark's whole budget)."""
    outputs = [OutputGroup(name="particles", type="particle", num_items=1000, results=[
        OutputResult(name=n, type=n, metafiles=[f"J1/J1_particles_{n}.cs"], num_items=1000)
        for n in ("blob", "ctf", "alignments3D")])]
    t0 = time.time()
    with api.store.write() as tx:
        n = 0
        for i in range(history):
            n = tx.next_number(f"{project_uid}/job")
            status = JobStatus.FAILED if i % 10 == 9 else JobStatus.COMPLETED
            tx.put_job(Job(uid=f"J{n}", project_uid=project_uid, type="test_sleep", job_dir=f"J{n}",
                           status=status, outputs=outputs, status_times={"completed": t0 - 86400},
                           queued_lane="local"))
        parent = tx.next_number(f"{project_uid}/job")
        tx.put_job(Job(uid=f"J{parent}", project_uid=project_uid, type="test_sleep", job_dir=f"J{parent}"))
        for _ in range(active):
            n = tx.next_number(f"{project_uid}/job")
            tx.put_job(Job(uid=f"J{n}", project_uid=project_uid, type="test_sleep", job_dir=f"J{n}",
                           status=JobStatus.QUEUED, queue_status=QueueStatus.WAITING_INPUTS,
                           queued_lane="local", parents=[f"J{parent}"], status_times={"queued": t0}))


def measure(history: int, active: int, idle_s: float, trials: int) -> tuple[float, float, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        api = Api.init(Path(tmp) / "home", Path(tmp) / "projects")
        project = api.create_project("bench")
        fill(api, project.uid, history, active)
        with open(Path(tmp) / "master.log", "wb") as log:
            master = subprocess.Popen([sys.executable, "-m", "cryohpc.cli", "--home", str(api.instance.home),
                                       "master", "run"], stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(3.0)  # start-up and first passes
            if master.poll() is not None:
                raise SystemExit((Path(tmp) / "master.log").read_text())
            c0, t0 = cpu_seconds(master.pid), time.monotonic()
            time.sleep(idle_s)
            idle = (cpu_seconds(master.pid) - c0) / (time.monotonic() - t0)
            times = []
            for _ in range(trials):
                job = project.create_job("test_sleep", params={"seconds": 0.0})
                t = time.perf_counter()
                job.queue()
                while job.status not in (JobStatus.COMPLETED, JobStatus.FAILED):
                    time.sleep(0.02)
                times.append(time.perf_counter() - t)
                assert job.status == JobStatus.COMPLETED, job.model.errors_run
            db = api.instance.paths.db
            size = sum(f.stat().st_size for f in db.parent.glob(db.name + "*")) / 1e6
        finally:
            master.terminate()
            master.wait(30)
    return idle, size, times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", default="100,10000,100000", help="jobs in the database, comma-separated")
    parser.add_argument("--active", type=int, default=200)
    parser.add_argument("--idle-s", type=float, default=10.0)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    print(f"master at the default 1 s poll; {args.active} queued jobs waiting on inputs "
          "(half the jobs where there are fewer)")
    print(f"{'jobs in db':>10} {'db MB':>7} {'idle CPU (% of a core)':>23} {'queue→done median (s)':>22}  trials")
    for n in (int(x) for x in args.history.split(",")):
        active = min(args.active, n // 2)
        idle, size, times = measure(n - active - 1, active, args.idle_s, args.trials)
        print(f"{n:>10} {size:7.1f} {idle * 100:23.1f} {statistics.median(times):22.2f}  "
              + " ".join(f"{t:.2f}" for t in times), flush=True)


if __name__ == "__main__":
    main()
