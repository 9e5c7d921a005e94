"""The master's hands on a worker machine it reaches over SSH.

``python -m cryohpc.worker.detach start|status|kill|facts ...`` runs on the target and
prints one JSON line. ``start`` leaves behind a supervisor that leads its own session
(so it outlives the SSH connection and a kill of its process group reaches the worker
and its MPI ranks), waits for the worker and writes its exit status into the job
directory, where the master reads it even after a network outage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..envpath import expand_path_variables
from ..errors import UserError
from ..exitcode import EXIT_CODE_NAME, SUPERVISOR_FILE, write_exit_code
from ..machine import gpu_ids, ram_gb
from ..procs import is_alive, kill_group, process_start_ticks


def _supervise(command: list[str], job_dir: Path, env: dict[str, str], ready_fd: int) -> None:
    """Runs in the forked child: never returns."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        log = os.open(job_dir / "job.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(devnull, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)  # nothing may keep the SSH channel's pipes open
        # handled (not ignored) so the worker, after exec, gets the default action back
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        (job_dir / EXIT_CODE_NAME).unlink(missing_ok=True)
        proc = subprocess.Popen(command, cwd=job_dir, env={**os.environ, **env}, stdin=devnull,
                                stdout=log, stderr=log, close_fds=True)
        os.write(ready_fd, b"ok")
        os.close(ready_fd)
        write_exit_code(job_dir, proc.wait())
        code = 0
    except BaseException as err:  # reported through the pipe if the parent still listens
        with contextlib.suppress(OSError):
            os.write(ready_fd, f"error: {err}".encode())
    finally:
        os._exit(code)



def start(command: list[str], job_dir: Path, env: dict[str, str]) -> dict:
    """Start the job's supervisor, or report the one already running there: a start the
    master could not confirm (timeout, dropped connection) is retried without a second
    worker writing into the same job directory."""
    try:
        pid, ticks = _parse_pid((job_dir / SUPERVISOR_FILE).read_text().strip())
        if is_alive(pid, ticks):
            return {"pid": pid, "start": ticks, "host": socket.gethostname(), "adopted": True}
    except (FileNotFoundError, ValueError):
        pass
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _supervise(command, job_dir, env, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        answer = pipe.read().decode(errors="replace")
    if answer != "ok":
        raise RuntimeError(f"could not start {command[0]}: {answer or 'supervisor died'}")
    ticks = process_start_ticks(pid)
    tmp = job_dir / f".{SUPERVISOR_FILE}.tmp"
    tmp.write_text(f"{pid}:{ticks}\n")
    tmp.replace(job_dir / SUPERVISOR_FILE)
    return {"pid": pid, "start": ticks, "host": socket.gethostname()}


def _parse_pid(text: str) -> tuple[int, int | None]:
    pid, _, ticks = text.partition(":")
    return int(pid), (int(ticks) if ticks else None)


def facts(cache_path: str | None, shared_file: str | None = None) -> dict:
    """What ``worker connect`` records and ``worker test`` checks; ``shared_file`` is a
    file the master just wrote under its projects root, read back here to show that the
    job directories are shared at the same path."""
    from .. import __version__

    out: dict = {"host": socket.gethostname(), "cpus": os.cpu_count() or 1, "ram_gb": round(ram_gb(), 1),
                 "gpus": gpu_ids(), "python": sys.executable, "cryohpc": __version__}
    if shared_file:
        try:
            out["shared_token"] = Path(shared_file).read_text().strip()
        except OSError as err:
            out["shared_error"] = f"{shared_file}: {err.strerror or err}"
    if cache_path:
        try:
            path = Path(expand_path_variables(cache_path))
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"x")
            probe.unlink()
            out["cache_free_mb"] = round(shutil.disk_usage(path).free / 1e6)
        except OSError as err:
            out["cache_error"] = f"{path}: {err.strerror or err}"
        except UserError as err:
            out["cache_error"] = str(err)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cryohpc.worker.detach")
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("start")
    p.add_argument("--job-dir", required=True, type=Path)
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p = sub.add_parser("status")
    p.add_argument("pids", nargs="*", metavar="PID[:START]")
    p = sub.add_parser("kill")
    p.add_argument("pid", metavar="PGID[:START]")
    p.add_argument("--grace-s", type=float, default=5.0)
    p = sub.add_parser("facts")
    p.add_argument("--cache-path")
    p.add_argument("--shared-file")
    args = parser.parse_args(argv)
    try:
        if args.action == "start":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            env = dict(item.split("=", 1) for item in args.env)
            out = start(command, args.job_dir, env)
        elif args.action == "status":
            out = {text: is_alive(*_parse_pid(text)) for text in args.pids}
        elif args.action == "kill":
            out = {"gone": kill_group(*_parse_pid(args.pid), grace_s=args.grace_s)}
        else:
            out = facts(args.cache_path, args.shared_file)
    except (OSError, RuntimeError, ValueError) as err:
        print(f"cryohpc.worker.detach {args.action}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
