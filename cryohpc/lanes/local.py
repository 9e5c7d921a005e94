"""The ``local`` node lane: workers run as child processes of this machine.

Each worker gets its own session (process group) so a kill reaches everything it
started, MPI ranks included, and so it survives a master restart. A PID is only
trusted together with its start time, to be safe against PID reuse.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..machine import gpu_ids, ram_gb
from ..model import Job, Resources
from ..procs import is_alive, kill_group, process_start_ticks
from .base import Lane, Launched, PollResult, RunState
from .siteconfig import NodeLaneConfig


def default_mpiexec() -> str | None:
    """The MPI launcher installed beside this Python (PyPI mpich), else one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


class LocalLane(Lane):
    def __init__(self, cfg: NodeLaneConfig):
        self.cfg = cfg
        self.name = cfg.name
        self._children: dict[int, subprocess.Popen] = {}
        self._gpus: list[int] | None = cfg.gpus

    def cache_settings(self, target: str = "") -> dict | None:
        return self.cfg.cache_settings()

    def capacity(self) -> Resources:
        if self._gpus is None:
            self._gpus = gpu_ids()
        return Resources(
            cpus=self.cfg.cpus or os.cpu_count() or 1,
            ram_gb=self.cfg.ram_gb or ram_gb(),
            gpus=len(self._gpus),
            gpu_ids=list(self._gpus),
        )

    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        cmd = [sys.executable, "-m", "cryohpc.worker.main", "--job-dir", str(job_dir)]
        if ranks > 1:
            mpiexec = self.cfg.mpiexec or default_mpiexec()
            if not mpiexec:
                raise RuntimeError(f"lane {self.name}: job needs {ranks} MPI ranks but no mpiexec was found")
            cmd = [mpiexec, "-n", str(ranks), *cmd]
        return cmd

    def launch(self, job: Job, job_dir: Path, command: list[str], env: dict[str, str], **_: object) -> Launched:
        full_env = {**os.environ, **self.cfg.env, **env}
        with open(job_dir / "job.log", "ab") as log:
            proc = subprocess.Popen(
                command, cwd=job_dir, env=full_env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._children[proc.pid] = proc
        return Launched(pid=proc.pid, pid_start=process_start_ticks(proc.pid), host=os.uname().nodename)

    def _alive(self, job: Job) -> bool:
        return is_alive(job.run_pid, job.run_pid_start)

    def poll(self, jobs: list[Job], job_dirs: dict[str, Path] | None = None) -> dict[str, PollResult]:
        out = {}
        for job in jobs:
            proc = self._children.get(job.run_pid or -1)
            if proc is not None:
                rc = proc.poll()
                if rc is None:
                    out[job.ref] = PollResult(RunState.ALIVE)
                else:
                    self._children.pop(proc.pid, None)
                    out[job.ref] = PollResult(RunState.EXITED, exit_code=rc)
            elif job.run_pid is None:
                out[job.ref] = PollResult(RunState.EXITED, detail="no process was recorded")
            else:
                out[job.ref] = PollResult(RunState.ALIVE if self._alive(job) else RunState.EXITED)
        return out

    def kill(self, job: Job) -> None:
        if job.run_pid is None:
            return
        proc = self._children.get(job.run_pid)
        kill_group(job.run_pid, job.run_pid_start, reap=proc.poll if proc is not None else None)
        self._children.pop(job.run_pid, None)
