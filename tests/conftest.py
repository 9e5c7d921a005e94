"""Shared fixtures: a fresh instance per test, sample data, a master in a thread."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"
os.environ["CRYOHPC_PLUGINS"] = "cryohpc_testjobs"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(PLUGINS))

from cryohpc.api import Api  # noqa: E402
from cryohpc.master import run_master  # noqa: E402
from cryohpc.sampledata import write_sample_particles, write_sample_volume  # noqa: E402

FAST = dict(poll_interval_s=0.1, heartbeat_interval_s=0.2, heartbeat_timeout_s=30.0)


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def api(home, tmp_path) -> Api:
    return Api.init(home, tmp_path / "projects", **FAST)


@pytest.fixture
def project(api):
    return api.create_project("test project")


@pytest.fixture
def sample(tmp_path):
    return write_sample_particles(tmp_path / "data", n=40, box=16)


@pytest.fixture
def sample_volume(tmp_path):
    path = tmp_path / "data" / "volume.mrc"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sample_volume(path, box=16)
    return path


class ThreadMaster:
    """The real master loop, in a thread of the test process (stoppable, restartable)."""

    def __init__(self, api: Api):
        self.api = api
        self.thread: threading.Thread | None = None
        self.stop_event = threading.Event()
        self.error: BaseException | None = None

    def start(self) -> ThreadMaster:
        self.stop_event = threading.Event()

        def target():
            try:
                run_master(self.api.instance, self.stop_event, install_signals=False)
            except BaseException as err:  # surfaced by stop()
                self.error = err

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        if self.thread is not None:
            self.stop_event.set()
            self.thread.join(timeout=30)
            self.thread = None
        if self.error:
            raise self.error


@pytest.fixture
def master(api):
    m = ThreadMaster(api).start()
    yield m
    m.stop()


def db_snapshot(api: Api) -> list[str]:
    """Every row of the database, to show a failed command changed nothing."""
    conn = sqlite3.connect(api.instance.paths.db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def cli(home: Path, *args: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the real ``cryohpc`` command in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "cryohpc.cli", "--home", str(home), *args],
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"cryohpc {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
