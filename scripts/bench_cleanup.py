#!/usr/bin/env python
"""Sizes and the cleanup preview on a large project, as a user runs them, beside ``du -s``.

Builds a project of ``--jobs`` completed jobs (default 10,000) whose directories hold
``--files`` files in all (default 1,000,000, small files: the cost of measuring is the
number of files, not their bytes), every 10th job final (so its ancestors are protected),
chains of 5 jobs. Then times, each in a fresh process as the user types it:

  cryohpc project refresh-size P1
  cryohpc cleanup P1 --delete-non-final --clear-intermediate --preview          (sizes recorded)
  cryohpc cleanup P1 --delete-non-final --clear-intermediate --preview --measure
  du -s <project>                                                             (the peer)

and prints seconds and peak resident memory for each. Run: python scripts/bench_cleanup.py
[--jobs N --files N --keep DIR].
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryohpc.api import Api
from cryohpc.model import Connection, Job, OutputGroup, OutputResult
from cryohpc.status import JobStatus


def build(root: Path, n_jobs: int, n_files: int) -> tuple[Api, str]:
    api = Api.init(root / "home", root / "projects")
    project = api.create_project("bench")
    pdir = project.dir
    per = max(1, n_files // n_jobs)
    payload = b"x" * 512
    t0 = time.monotonic()
    jobs = []
    with api.store.write() as tx:
        for i in range(1, n_jobs + 1):
            uid = f"J{tx.next_number(f'{project.uid}/job')}"
            parent = f"J{i - 1}" if i % 5 != 1 else None
            job = Job(uid=uid, project_uid=project.uid, type="homo_reconstruct", job_dir=uid,
                      status=JobStatus.COMPLETED, status_times={"completed": time.time() - 3600},
                      inputs={"particles": [Connection(job_uid=parent, group_name="particles")]} if parent else {},
                      parents=[parent] if parent else [], children=[f"J{i + 1}"] if i % 5 and i < n_jobs else [],
                      is_final_result=(i % 50 == 0),
                      outputs=[OutputGroup(name="particles", type="particle",
                                           results=[OutputResult(name="blob", type="blob",
                                                                 metafiles=[f"{uid}/{uid}_particles.cs"])])])
            jobs.append(job)
            tx.put_job(job)
    for job in jobs:
        d = pdir / job.job_dir
        (d / "checkpoints").mkdir(parents=True, exist_ok=True)
        for k in range(per):
            (d / ("checkpoints" if k % 4 == 0 else ".") / f"f{k}.dat").write_bytes(payload)
        (d / f"{job.uid}_particles.cs").write_bytes(payload)
    print(f"built {n_jobs} jobs, {n_jobs * (per + 1)} files in {time.monotonic() - t0:.1f} s under {pdir}",
          flush=True)
    return api, project.uid


def timed(cmd: list[str], home: Path | None = None) -> tuple[float, int, str]:
    """Seconds and peak RSS (kB) of one command in a fresh process, read by GNU time (a
    child forked from this Python would report this process's memory as its own);
    ``home``: a cryohpc command, run as the CLI runs."""
    if home is not None:
        cmd = [sys.executable, "-m", "cryohpc.cli", "--home", str(home), "--json", *cmd]
    proc = subprocess.run(["/usr/bin/time", "-f", "BENCH %e %M", *cmd], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr}")
    seconds, kb = proc.stderr.rsplit("BENCH", 1)[1].split()
    return float(seconds), int(kb), proc.stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="build here and keep it (default: a temporary directory)")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-cleanup-"))
    api, puid = build(root, args.jobs, args.files)
    home = root / "home"
    pdir = api.find_project(puid).dir
    subprocess.run(["sync"], check=False)
    rows = []
    s, rss, out = timed(["project", "refresh-size", puid], home)
    usage = json.loads(out)
    rows.append(("cryohpc project refresh-size", s, rss, f"{usage['files']} files, "
                                                      f"{(usage['jobs_bytes'] + usage['other_bytes']) / 1e6:.0f} MB"))
    options = ["--delete-non-final", "--clear-intermediate", "--preview"]
    s, rss, out = timed(["cleanup", puid, *options], home)
    est = json.loads(out)["estimate"]
    rows.append(("cryohpc cleanup --preview", s, rss, f"{est['jobs_deleted']} deleted, {est['jobs_trimmed']} "
                                                     f"trimmed, {est['bytes_freed'] / 1e6:.0f} MB"))
    s, rss, out = timed(["cleanup", puid, *options, "--measure"], home)
    rows.append(("cryohpc cleanup --preview --measure", s, rss, ""))
    s, rss, out = timed(["du", "-s", "--apparent-size", "-B1", str(pdir)])
    rows.append(("du -s --apparent-size (peer)", s, rss, f"{int(out.split()[0]) / 1e6:.0f} MB incl. directories"))
    s, rss, out = timed(["du", "-s", str(pdir)])
    rows.append(("du -s (peer)", s, rss, ""))
    print(f"{'command':40} {'seconds':>8} {'peak MB':>8}  result")
    for name, sec, kb, what in rows:
        print(f"{name:40} {sec:8.2f} {kb / 1024:8.0f}  {what}")
    print(f"({os.cpu_count()} CPUs; project at {pdir})")


if __name__ == "__main__":
    main()
