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
from ..model import Resources
from ..procs import is_alive, kill_group, process_start_ticks
from .base import Launched, LaunchRequest, NodeLane, PollResult, RunHandle, RunState
from .errors import LaunchRefused
from .siteconfig import NodeLaneConfig

PID_FILE = "worker.pid"  # pid:start of the worker's process group, for a master that died mid-launch


def default_mpiexec() -> str | None:
    """The MPI launcher installed beside this Python (PyPI mpich), else one on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


class LocalLane(NodeLane):
    def __init__(self, cfg: NodeLaneConfig):
        self.cfg = cfg
        self.name = cfg.name
        self._children: dict[int, subprocess.Popen] = {}
        self._gpus: list[int] | None = cfg.gpus
        self.oversubscribe = cfg.oversubscribe

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

    def program_launcher(self, target: str = "") -> list[str] | None:
        return [self.cfg.mpiexec] if self.cfg.mpiexec else None

    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        cmd = [sys.executable, "-m", "cryohpc.worker.main", "--job-dir", str(job_dir)]
        if ranks > 1:
            mpiexec = self.cfg.mpiexec or default_mpiexec()
            if not mpiexec:
                raise LaunchRefused(f"lane {self.name}: job needs {ranks} MPI ranks but no mpiexec was found")
            cmd = [mpiexec, "-n", str(ranks), *cmd]
        return cmd

    def find(self, request: LaunchRequest) -> Launched | None:
        earlier = _read_pid_file(request.job_dir / PID_FILE)
        if earlier and is_alive(*earlier):
            return Launched(pid=earlier[0], pid_start=earlier[1], host=os.uname().nodename, adopted=True)
        return None

    def launch(self, request: LaunchRequest) -> Launched:
        pid_file = request.job_dir / PID_FILE
        full_env = {**os.environ, **self.cfg.env, **request.env}
        try:
            with open(request.job_dir / "job.log", "ab") as log:
                proc = subprocess.Popen(
                    request.command, cwd=request.job_dir, env=full_env, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                )
        except OSError as err:
            raise LaunchRefused(f"lane {self.name}: cannot start {request.command[0]}: {err}") from err
        self._children[proc.pid] = proc
        start = process_start_ticks(proc.pid)
        pid_file.write_text(f"{proc.pid}:{start}\n")
        return Launched(pid=proc.pid, pid_start=start, host=os.uname().nodename)

    def poll(self, runs: list[RunHandle]) -> dict[str, PollResult]:
        out = {}
        for run in runs:
            proc = self._children.get(run.pid or -1)
            if proc is not None:
                rc = proc.poll()
                if rc is None:
                    out[run.ref] = PollResult(RunState.ALIVE)
                else:
                    self._children.pop(proc.pid, None)
                    out[run.ref] = PollResult(RunState.EXITED, exit_code=rc)
            elif run.pid is None:
                out[run.ref] = PollResult(RunState.EXITED, detail="no process was recorded")
            else:
                out[run.ref] = PollResult(RunState.ALIVE if is_alive(run.pid, run.pid_start) else RunState.EXITED)
        return out

    def kill(self, run: RunHandle) -> None:
        if run.pid is None:
            return
        proc = self._children.get(run.pid)
        kill_group(run.pid, run.pid_start, reap=proc.poll if proc is not None else None)
        self._children.pop(run.pid, None)


def _read_pid_file(path: Path) -> tuple[int, int | None] | None:
    try:
        pid, _, start = path.read_text().strip().partition(":")
        return int(pid), int(start) if start else None
    except (OSError, ValueError):
        return None
