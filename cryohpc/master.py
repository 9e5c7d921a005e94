"""The master process: one per instance (an exclusive lock on ``master.lock``), running
scheduler passes every ``poll_interval_s``, or at once when woken (:mod:`wakeup`), until
told to stop."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import traceback

from .errors import UserError
from .instance import Instance
from .scheduler import Scheduler
from .wakeup import Wakeup, mark_master_thread

log = logging.getLogger("cryohpc.master")


class MasterLock:
    """Held for the master's lifetime; the kernel drops it if the process dies."""

    def __init__(self, inst: Instance):
        self.path = inst.paths.master_lock
        self._fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def master_pid(inst: Instance) -> int | None:
    """PID of the running master, or None when no master holds the lock."""
    lock = MasterLock(inst)
    if lock.acquire():
        lock.release()
        return None
    try:
        return int(inst.paths.master_pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return -1  # locked, pid file not written yet


MAX_BACKOFF_S = 30.0


class PassErrors:
    """Exceptions that escaped a scheduler pass. Each is a bug (per-job trouble is caught
    inside the pass): logged with its traceback once per kind, then counted; passes back
    off while they keep failing. ``raise_first`` lets tests fail on them."""

    def __init__(self, keep: bool = False):
        self.keep = keep
        self.seen: dict[tuple, int] = {}
        self.kept: list[BaseException] = []
        self.in_a_row = 0

    def record(self, err: BaseException) -> None:
        tb = traceback.extract_tb(err.__traceback__)
        kind = (type(err).__name__, *(tb[-1][:3] if tb else ()))
        self.seen[kind] = self.seen.get(kind, 0) + 1
        if self.seen[kind] == 1:
            log.exception("scheduler pass failed (logged once; later ones are counted): %s", err)
        else:
            log.error("scheduler pass failed again (%s, %d times): %s", kind[0], self.seen[kind], err)
        self.in_a_row += 1
        if self.keep:
            self.kept.append(err)

    def wait_s(self, poll_s: float) -> float:
        """The pause before the next pass: the poll period, doubled per failed pass in a row."""
        return min(MAX_BACKOFF_S, poll_s * 2 ** self.in_a_row) if self.in_a_row else poll_s

    def raise_first(self) -> None:
        if self.kept:
            raise self.kept[0]


def run_master(inst: Instance, stop: threading.Event | None = None, install_signals: bool = True,
               errors: PassErrors | None = None) -> None:
    """Run in the foreground until ``stop`` is set or SIGTERM/SIGINT arrives.

    Raises:
        UserError: another master already runs for this instance.
    """
    lock = MasterLock(inst)
    if not lock.acquire():
        raise UserError(f"a master is already running for {inst.home} (pid {master_pid(inst)}); "
                        "stop it with 'cryohpc master stop'")
    stop = stop or threading.Event()
    mark_master_thread()
    wake = Wakeup(inst.paths.master_wake)
    if install_signals:
        def on_signal(*_) -> None:
            stop.set()
            wake.poke()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    inst.paths.master_pid.write_text(str(os.getpid()))
    log.info("master started for %s (pid %d)", inst.home, os.getpid())
    errors = errors or PassErrors()
    sched = None
    try:
        sched = Scheduler(inst)
        while not stop.is_set():
            started = time.monotonic()
            try:
                sched.step()
                errors.in_a_row = 0
            except Exception as err:  # a bug: the master keeps serving, slower, and says so
                errors.record(err)
            pause = errors.wait_s(inst.config.poll_interval_s) - (time.monotonic() - started)
            if errors.in_a_row:  # a failing pass is not retried faster for being woken
                stop.wait(max(0.0, pause))
            else:
                wake.wait(max(0.0, pause), stop)
    finally:
        if sched is not None:
            sched.close()  # warm workers stop; running jobs go on
        wake.close()
        inst.paths.master_pid.unlink(missing_ok=True)
        lock.release()
        log.info("master stopped")


@contextlib.contextmanager
def master_in_thread(inst: Instance):
    """The master loop in a daemon thread of this process for the ``with`` block (benchmarks
    and scripts that drive jobs from Python); stopped and joined on leaving."""
    stop = threading.Event()
    thread = threading.Thread(target=run_master, args=(inst, stop, False), daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=30)


def start_master(inst: Instance, timeout_s: float = 15.0) -> int:
    """Start a detached master; returns its PID once it holds the lock.

    Raises:
        UserError: a master is already running, or the new one exited (log tail shown).
    """
    pid = master_pid(inst)
    if pid is not None:
        raise UserError(f"a master is already running for {inst.home} (pid {pid})")
    with open(inst.paths.master_log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cryohpc.cli", "--home", str(inst.home), "master", "run"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = inst.paths.master_log.read_text(errors="replace")[-2000:]
            raise UserError(f"master exited at start (code {proc.returncode}); {inst.paths.master_log}:\n{tail}")
        pid = master_pid(inst)
        if pid == proc.pid:
            return pid
        time.sleep(0.05)
    raise UserError(f"master did not start within {timeout_s:.0f} s; see {inst.paths.master_log}")


def stop_master(inst: Instance, timeout_s: float = 30.0) -> int | None:
    """Stop the running master (SIGTERM, waiting for it to release the lock); returns its
    PID, or None when none was running. Running jobs keep running."""
    pid = master_pid(inst)
    if pid is None:
        return None
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if master_pid(inst) is None:
            return pid
        time.sleep(0.05)
    raise UserError(f"master (pid {pid}) did not stop within {timeout_s:.0f} s")
