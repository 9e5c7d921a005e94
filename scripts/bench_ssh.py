#!/usr/bin/env python
"""Cost of remote commands through cryohpc's SSH session manager, on a real sshd.

Runs the same commands three ways against scripts/dev-sshd.sh on 127.0.0.1 and prints
commands per second:
- the session manager (one kept paramiko transport, a channel per command);
- the OpenSSH client started per command, as a ``send_cmd: ssh host {{ command }}``
  template does (the peer);
- the OpenSSH client multiplexed over a ControlMaster socket (the best a wrapper can do);
- a local ``/bin/sh -c`` per command (the bound: no SSH at all).
Then the master's status query of one worker with 50 jobs, and 50 concurrent commands
sharing the one connection. Each command also pays for the remote login shell (sshd runs
``$SHELL -c``; bash reads ~/.bashrc there), the same for every way that uses SSH.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cryohpc.lanes.siteconfig import SshHost
from cryohpc.lanes.ssh import SshSessions

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rate(fn, n: int) -> float:
    fn()  # warm: connection made, caches filled
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return n / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="commands per way")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, port = Path(tmp) / "sshd", free_port()
        subprocess.run(["bash", str(ROOT / "scripts/dev-sshd.sh"), "up", str(folder), str(port)], check=True)
        try:
            host = SshHost(host="127.0.0.1", port=port, identity_file=str(folder / "client_key"),
                           known_hosts=str(folder / "known_hosts"), max_channels=16)
            manager = SshSessions()
            ssh = ["ssh", "-p", str(port), "-i", str(folder / "client_key"), "-o", "BatchMode=yes",
                   "-o", f"UserKnownHostsFile={folder / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"]
            mux = [*ssh, "-o", "ControlMaster=auto", "-o", f"ControlPath={tmp}/mux-%C", "-o", "ControlPersist=60"]
            ways = {
                "cryohpc session manager": lambda: manager.run(host, "true"),
                "OpenSSH client per command (peer)": lambda: subprocess.run([*ssh, "127.0.0.1", "true"], check=True),
                "OpenSSH ControlMaster": lambda: subprocess.run([*mux, "127.0.0.1", "true"], check=True),
                "local /bin/sh -c (no SSH, bound)": lambda: subprocess.run(["/bin/sh", "-c", "true"], check=True),
            }
            results = {name: rate(fn, args.n) for name, fn in ways.items()}
            peer = results["OpenSSH client per command (peer)"]
            print(f"{'way':40s} {'cmd/s':>8s} {'ms/cmd':>8s} {'vs peer':>8s}")
            for name, r in results.items():
                print(f"{name:40s} {r:8.1f} {1000 / r:8.2f} {r / peer:7.2f}x")
            pids = " ".join(f"{p}:" for p in range(100000, 100050))
            status = f"{ROOT}/.venv/bin/python -m cryohpc.worker.detach status {pids}"
            r = rate(lambda: manager.run(host, status), 20)
            print(f"status query of 50 jobs on one worker: {1000 / r:.1f} ms")
            with ThreadPoolExecutor(50) as pool:
                t0 = time.perf_counter()
                list(pool.map(lambda _: manager.run(host, "sleep 0.2"), range(50)))
                took = time.perf_counter() - t0
            serial = 50 * (0.2 + 1 / results["cryohpc session manager"])
            print(f"50 concurrent 'sleep 0.2' over one connection, {host.max_channels} channels: {took:.2f} s "
                  f"(one at a time: {serial:.1f} s; channels alone: {50 / host.max_channels * 0.2:.2f} s); "
                  f"transports opened: {manager.stats['transports_opened']}")
            manager.close_all()
        finally:
            subprocess.run(["bash", str(ROOT / "scripts/dev-sshd.sh"), "down", str(folder)], check=True)


if __name__ == "__main__":
    main()
