"""The ``local`` node lane: workers run as child processes of this machine.

Each worker gets its own session (process group) so a kill reaches everything it
started, MPI ranks included, and so it survives a master restart. A PID is only
trusted together with its start time, to be safe against PID reuse.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..model import Job, Resources
from .base import Lane, Launched, PollResult, RunState
from .siteconfig import NodeLaneConfig, machine_ram_gb

KILL_GRACE_S = 5.0


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live (non-zombie) process in clock ticks since boot, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def detect_gpu_ids() -> list[int]:
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=15, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return []
    return [int(x) for x in out.split() if x.strip().isdigit()]


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

    def cache_settings(self) -> dict | None:
        c = self.cfg
        return None if not c.cache_path else {"path": c.cache_path, "quota_mb": c.cache_quota_mb,
                                               "reserve_mb": c.cache_reserve_mb,
                                               "lifetime_days": c.cache_lifetime_days, "threads": c.cache_threads}

    def capacity(self) -> Resources:
        if self._gpus is None:
            self._gpus = detect_gpu_ids()
        return Resources(
            cpus=self.cfg.cpus or os.cpu_count() or 1,
            ram_gb=self.cfg.ram_gb or machine_ram_gb(),
            gpus=len(self._gpus),
            gpu_ids=list(self._gpus),
        )

    def worker_command(self, job_dir: Path, ranks: int) -> list[str]:
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
        if job.run_pid is None:
            return False
        ticks = process_start_ticks(job.run_pid)
        return ticks is not None and (job.run_pid_start is None or ticks == job.run_pid_start)

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
        if not self._alive(job):
            return
        pgid = job.run_pid
        for sig, wait_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 2.0)):
            try:
                os.killpg(pgid, sig)
                os.killpg(pgid, signal.SIGCONT)  # a stopped process only acts on SIGTERM once resumed
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self._alive(job):
                proc = self._children.get(pgid)
                if proc is not None:
                    proc.poll()
                time.sleep(0.05)
            if not self._alive(job):
                break
        proc = self._children.pop(pgid, None)
        if proc is not None:
            proc.poll()
