"""A node lane of worker machines reached over SSH (``kind: ssh``), CryoSPARC's
standalone workers: cryohpc places jobs on the targets by free GPUs and starts them
through ``cryohpc.worker.detach`` on the target, which outlives the SSH connection.

All SSH traffic goes through the process's one session manager. A target the manager
cannot reach is reported unreachable: its jobs are neither followed nor failed until it
answers again, when their true state (still running, or exited with the code its
supervisor wrote into the job directory) is read.
"""

from __future__ import annotations

import json
import shlex
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..errors import CryohpcError, TransientError, UserError
from ..exitcode import SUPERVISOR_FILE, read_exit_code
from ..model import Resources
from .base import Launched, LaunchRequest, NodeLane, PollResult, RunHandle, RunState
from .errors import LaneUnreachable, LaunchRefused, LaunchUnconfirmed
from .siteconfig import NodeLaneConfig, WorkerTarget
from .ssh import HostUnreachable, RemoteTimeout, SshRefused, SshSessions, sessions

DETACH = "cryohpc.worker.detach"
MAX_PARALLEL_POLLS = 16


class RemoteCommandError(CryohpcError):
    """The helper ran on the target but failed (e.g. no cryohpc there); carries its stderr."""


class SshWorkerLane(NodeLane):
    kill_when_back = True  # the master stops it once the worker answers again

    def __init__(self, cfg: NodeLaneConfig, manager: SshSessions | None = None):
        self.cfg = cfg
        self.name = cfg.name
        self.workers: dict[str, WorkerTarget] = {w.name: w for w in cfg.workers}
        self.ssh = manager or sessions()
        self.poll_interval_s = cfg.poll_interval_s
        self.oversubscribe = cfg.oversubscribe

    # -- where jobs go ------------------------------------------------------------------
    def targets(self) -> dict[str, Resources]:
        return {name: Resources(cpus=w.cpus, ram_gb=w.ram_gb, gpus=len(w.gpus), gpu_ids=list(w.gpus))
                for name, w in self.workers.items()}

    def capacity(self) -> Resources:
        caps = list(self.targets().values())
        return Resources(cpus=sum(c.cpus for c in caps), ram_gb=sum(c.ram_gb for c in caps),
                         gpus=sum(c.gpus for c in caps), gpu_ids=[])

    def unavailable(self) -> dict[str, str]:
        return {name: f"worker {name} unreachable: {detail}"
                for name, (state, _, detail) in self.target_states().items() if state == "unreachable"}

    def target_states(self) -> dict[str, tuple[str, float | None, str]]:
        return {name: self.ssh.reachability(w) for name, w in self.workers.items()}

    def worker(self, target: str) -> WorkerTarget:
        try:
            return self.workers[target]
        except KeyError:
            raise UserError(f"lane {self.name} has no worker target {target!r} "
                            f"(targets: {', '.join(self.workers) or 'none'})") from None

    def cache_settings(self, target: str = "") -> dict | None:
        return self.worker(target).cache_settings()

    def _python(self, w: WorkerTarget) -> str:
        return w.python or sys.executable

    def program_launcher(self, target: str = "") -> list[str] | None:
        w = self.worker(target)
        return [w.mpiexec] if w.mpiexec else None

    def worker_command(self, job_dir: Path, ranks: int, target: str = "") -> list[str]:
        w = self.worker(target)
        cmd = [self._python(w), "-m", "cryohpc.worker.main", "--job-dir", str(job_dir)]
        if ranks > 1:
            mpiexec = w.mpiexec or str(Path(self._python(w)).parent / "mpiexec")
            cmd = [mpiexec, "-n", str(ranks), *cmd]
        return cmd

    # -- talking to a target -------------------------------------------------------------
    def _helper(self, w: WorkerTarget, *args: str, timeout_s: float = 60.0) -> dict:
        """Run the detach helper on the target; its one JSON line.

        Raises:
            HostUnreachable, RemoteTimeout, SshRefused: from the session manager.
            RemoteCommandError: the helper failed there (e.g. cryohpc missing).
        """
        command = shlex.join([self._python(w), "-m", DETACH, *args])
        res = self.ssh.run(w, command, timeout_s=timeout_s)
        last = res.stdout.strip().splitlines()[-1:] or [""]
        if res.exit_status != 0 or not last[0].startswith("{"):
            tail = " / ".join((res.stderr or res.stdout).strip().splitlines()[-3:])
            raise RemoteCommandError(f"worker {w.name}: {command} exited {res.exit_status}: {tail}")
        return json.loads(last[0])

    def facts(self, target: str, shared_file: Path | None = None) -> dict:
        """Cores, memory, GPUs, cryohpc version and cache space, as the target reports
        them, and what it reads in ``shared_file`` (a file of the master's)."""
        w = self.worker(target)
        args = [*(["--cache-path", w.cache_path] if w.cache_path else []),
                *(["--shared-file", str(shared_file)] if shared_file else [])]
        return self._helper(w, "facts", *args)

    def _target(self, request: LaunchRequest) -> WorkerTarget:
        try:
            return self.worker(request.resources.target)
        except UserError as err:
            raise LaunchRefused(str(err)) from err

    def find(self, request: LaunchRequest) -> Launched | None:
        """The job's supervisor, if its pid file names one still running on the target."""
        try:
            text = (request.job_dir / SUPERVISOR_FILE).read_text().strip()
        except OSError:
            return None
        w = self._target(request)
        try:
            alive = self._helper(w, "status", text)
        except (TransientError, SshRefused, RemoteCommandError) as err:
            raise LaneUnreachable(f"could not tell whether an earlier start went through: {err}") from err
        if not alive.get(text):
            return None
        pid, _, start = text.partition(":")
        return Launched(pid=int(pid), pid_start=int(start) if start else None, host=w.name, adopted=True)

    def launch(self, request: LaunchRequest) -> Launched:
        """Start through the detach helper (which also adopts a supervisor already running
        for the job directory, so a retried start never starts a second worker)."""
        target = request.resources.target
        w = self._target(request)
        env_args = [f"--env={k}={v}" for k, v in {**w.env, **request.env}.items()]
        try:
            started = self._helper(w, "start", "--job-dir", str(request.job_dir), *env_args, "--", *request.command)
        except (HostUnreachable, SshRefused) as err:
            raise LaneUnreachable(str(err)) from err
        except RemoteTimeout as err:
            raise LaunchUnconfirmed(str(err)) from err
        except RemoteCommandError as err:
            raise LaunchRefused(str(err)) from err
        return Launched(pid=started["pid"], pid_start=started["start"], host=target,
                        adopted=bool(started.get("adopted")))

    def poll(self, runs: list[RunHandle]) -> dict[str, PollResult]:
        """One status command per target, the targets asked at once: a host that hangs
        costs this pass its own timeout, not the sum of everyone's."""
        by_target: dict[str, list[RunHandle]] = {}
        for run in runs:
            by_target.setdefault(run.target, []).append(run)
        out: dict[str, PollResult] = {}
        if len(by_target) <= 1:
            for target, group in by_target.items():
                out.update(self._poll_target(target, group))
            return out
        with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL_POLLS, len(by_target))) as pool:
            for part in pool.map(lambda item: self._poll_target(*item), by_target.items()):
                out.update(part)
        return out

    def _poll_target(self, target: str, group: list[RunHandle]) -> dict[str, PollResult]:
        w = self.workers.get(target)
        if w is None:
            gone = f"worker target {target!r} is no longer in lane {self.name}"
            return {j.ref: PollResult(RunState.UNREACHABLE, scheduler_status="unreachable", detail=gone) for j in group}
        pids = [_pid_arg(r) for r in group if r.pid is not None]
        try:
            alive = self._helper(w, "status", *pids) if pids else {}
        except (TransientError, SshRefused, RemoteCommandError) as err:
            return {j.ref: PollResult(RunState.UNREACHABLE, scheduler_status="unreachable", detail=str(err))
                    for j in group}
        out = {}
        for run in group:
            if alive.get(_pid_arg(run)):
                out[run.ref] = PollResult(RunState.ALIVE, scheduler_status="running")
            else:
                code = read_exit_code(run.job_dir) if run.job_dir else None
                out[run.ref] = PollResult(RunState.EXITED, exit_code=code, scheduler_status="exited")
        return out

    def kill(self, run: RunHandle) -> None:
        if run.pid is None:
            return
        w = self.worker(run.target)
        answer = self._helper(w, "kill", _pid_arg(run), timeout_s=30)
        if not answer.get("gone"):
            raise RemoteCommandError(f"worker {w.name}: process group {run.pid} survived SIGKILL")


def _pid_arg(run: RunHandle) -> str:
    """``PID:START`` as the detach helper takes and answers it."""
    return f"{run.pid}:{run.pid_start or ''}"
