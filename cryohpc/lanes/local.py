"""The ``local`` node lane: workers run as child processes of this machine.

Each worker gets its own session (process group) so a kill reaches everything it
started, MPI ranks included, and so it survives a master restart. A PID is only
trusted together with its start time, to be safe against PID reuse. CPU jobs of the
rank counts in ``warm_ranks`` go to workers started ahead of them (``warm.py``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from ..machine import gpu_ids, ram_gb
from ..model import Resources
from ..procs import is_alive, kill_group, process_start_ticks
from .base import Launched, LaunchRequest, NodeLane, PollResult, RunHandle, RunState, worker_env
from .errors import LaunchRefused
from .siteconfig import NodeLaneConfig
from .warm import WarmWorkers, append_output

QUIET_S = 1.0  # warm workers start only this long after a job's end
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
        self._running: set[int] = set()  # children not yet seen exited
        self._launcher_output: dict[int, tuple[IO[bytes], Path]] = {}  # children that were warm workers
        self._ended_at = -QUIET_S  # when a child last exited
        self._gpus: list[int] | None = cfg.gpus
        self.oversubscribe = cfg.oversubscribe
        self.warm = WarmWorkers(cfg.name, cfg.warm_ranks, self._standby_command,
                                {**os.environ, **cfg.env, **worker_env([])}) if cfg.warm_ranks else None

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
        return self._command(ranks, ["--job-dir", str(job_dir)])

    def _standby_command(self, ranks: int) -> list[str]:
        return self._command(ranks, ["--standby", str(ranks)])

    def _command(self, ranks: int, args: list[str]) -> list[str]:
        cmd = [sys.executable, "-m", "cryohpc.worker.main", *args]
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
        proc = self._hand_to_warm(request, full_env)
        if proc is None:
            try:
                with open(request.job_dir / "job.log", "ab") as log:
                    proc = subprocess.Popen(
                        request.command, cwd=request.job_dir, env=full_env, stdin=subprocess.DEVNULL,
                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    )
            except OSError as err:
                raise LaunchRefused(f"lane {self.name}: cannot start {request.command[0]}: {err}") from err
        self._children[proc.pid] = proc
        self._running.add(proc.pid)
        start = process_start_ticks(proc.pid)
        pid_file.write_text(f"{proc.pid}:{start}\n")
        return Launched(pid=proc.pid, pid_start=start, host=os.uname().nodename)

    def _hand_to_warm(self, request: LaunchRequest, full_env: dict[str, str]) -> subprocess.Popen | None:
        """The warm worker now running this job, or None to start one cold."""
        if self.warm is None:
            return None
        standby = self.warm.take(request.command, full_env,
                                 lambda ranks: self.worker_command(request.job_dir, ranks))
        if standby is None or not self.warm.hand_over(standby, request.job_dir):
            return None
        self._launcher_output[standby.proc.pid] = (standby.output, request.job_dir)
        return standby.proc

    def tend(self) -> None:
        """Start the missing warm workers while the lane runs no job, and not within
        ``QUIET_S`` of a job's end (the user's next job often follows at once). A warm-up
        beside a job would slow it: a job's threads use more cores than it was given."""
        if self.warm is not None:
            self._reap()
            if not self._running and time.monotonic() - self._ended_at >= QUIET_S:
                self.warm.tend(self.capacity().cpus)

    def close(self) -> None:
        if self.warm is not None:
            self.warm.close()

    def _reap(self) -> None:
        """Settle the children that exited (a job whose end its events told is not polled
        again)."""
        for pid, proc in list(self._children.items()):
            if pid in self._running and proc.poll() is not None:
                self._settle(pid)

    def _ended(self, pid: int) -> None:
        self._children.pop(pid, None)
        self._settle(pid)

    def _settle(self, pid: int) -> None:
        """A child is gone: the lane may be idle, its launcher's output goes to its log."""
        if pid in self._running:
            self._running.discard(pid)
            self._ended_at = time.monotonic()
        kept = self._launcher_output.pop(pid, None)
        if kept is not None:
            append_output(*kept)

    def poll(self, runs: list[RunHandle]) -> dict[str, PollResult]:
        out = {}
        for run in runs:
            proc = self._children.get(run.pid or -1)
            if proc is not None:
                rc = proc.poll()
                if rc is None:
                    out[run.ref] = PollResult(RunState.ALIVE)
                else:
                    self._ended(proc.pid)
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
        self._ended(run.pid)


def _read_pid_file(path: Path) -> tuple[int, int | None] | None:
    try:
        pid, _, start = path.read_text().strip().partition(":")
        return int(pid), int(start) if start else None
    except (OSError, ValueError):
        return None
