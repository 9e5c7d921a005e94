"""Shared fixtures: a fresh instance per test, sample data, a master in a thread."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).parent / "plugins"
os.environ["CRYOHPC_PLUGINS"] = "cryohpc_testjobs"
# the built-in local lane starts warm workers by default; tests that are not about them
# launch cold, so each test's master starts no processes of its own (test_warm_workers.py)
os.environ["CRYOHPC_LOCAL_WARM_RANKS"] = ""
if os.geteuid() == 0:  # test machines run as root; Open MPI (RELION's) refuses that unless told
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    os.environ.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(PLUGINS))

from cryohpc.api import Api  # noqa: E402
from cryohpc.master import PassErrors, run_master  # noqa: E402
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
        self.pass_errors = PassErrors(keep=True)

    def start(self) -> ThreadMaster:
        self.stop_event = threading.Event()
        self.pass_errors = PassErrors(keep=True)  # an exception escaping a pass fails the test

        def target():
            try:
                run_master(self.api.instance, self.stop_event, install_signals=False, errors=self.pass_errors)
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
        self.pass_errors.raise_first()


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Sshd:
    """A real OpenSSH server on 127.0.0.1 (scripts/dev-sshd.sh), stoppable mid-test."""

    folder: Path
    port: int
    hide: str | None = None  # a folder this server's sessions do not see (not shared)

    @property
    def key(self) -> Path:
        return self.folder / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    def host(self, **extra) -> dict:
        """SSH settings for a site config or SshHost."""
        return {"host": "127.0.0.1", "port": self.port, "identity_file": str(self.key),
                "known_hosts": str(self.known_hosts), **extra}

    def start(self) -> None:
        env = {**os.environ, **({"SSHD_HIDE": self.hide} if self.hide else {})}
        up = subprocess.run(["bash", str(ROOT / "scripts/dev-sshd.sh"), "up", str(self.folder), str(self.port)],
                            capture_output=True, text=True, timeout=300, env=env)
        assert up.returncode == 0, up.stdout + up.stderr

    def stop(self) -> None:
        """The listener and every connection it serves, as when the machine goes away."""
        subprocess.run(["bash", str(ROOT / "scripts/dev-sshd.sh"), "down", str(self.folder)], check=True, timeout=60)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"), free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_sessions(monkeypatch):
    """A session manager of this test's own, so its connection counts start at zero."""
    from cryohpc.lanes import ssh

    manager = ssh.SshSessions()
    monkeypatch.setattr(ssh, "_SESSIONS", manager)
    yield manager
    manager.close_all()


def wait_for(pred, timeout_s: float = 30, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def random_slices(rng, n_slices: int, n_points: int, radius: float):
    """Central-slice samples for insertion tests: in-plane frequencies within ``radius``,
    random poses, complex values and weights (kx, ky, rotations, values, weights)."""
    import numpy as np

    from cryohpc.compute.geometry import random_rotations

    r, a = radius * np.sqrt(rng.random(n_points)), rng.uniform(0, 2 * np.pi, n_points)
    kx, ky = (r * np.cos(a)).astype(np.float32), (r * np.sin(a)).astype(np.float32)
    rots = random_rotations(n_slices, rng)
    vals = (rng.normal(size=(n_slices, n_points)) + 1j * rng.normal(size=(n_slices, n_points))).astype(np.complex64)
    wts = rng.random((n_slices, n_points)).astype(np.float32)
    return kx, ky, rots, vals, wts
