"""Every scheduler command goes through one place: rendered, optionally wrapped by the
lane's ``send_cmd`` (e.g. ssh to a login node), run with a timeout, counted, and turned
into an error that carries the command, exit code, stdout and stderr."""

from __future__ import annotations

import logging
import os
import subprocess
from collections import Counter

import jinja2

from ..errors import TransientError, UserError
from .render import Raw, render

log = logging.getLogger("cryohpc.lanes")


class CommandError(TransientError):
    """A scheduler command failed or did not answer; ``timed_out`` tells which."""

    def __init__(self, purpose: str, command: str, returncode: int | None, stdout: str, stderr: str,
                 timed_out: bool = False):
        self.purpose, self.command, self.returncode = purpose, command, returncode
        self.stdout, self.stderr, self.timed_out = stdout, stderr, timed_out
        what = "timed out" if timed_out else f"exited {returncode}"
        detail = (stderr or stdout).strip().splitlines()[-3:]
        super().__init__(f"{purpose} command {what}: {command}" + (f" -- {' / '.join(detail)}" if detail else ""))


class CommandRunner:
    def __init__(self, env: jinja2.Environment, lane_name: str, send_cmd: str | None, timeout_s: float,
                 extra_env: dict[str, str] | None = None):
        self.env, self.lane_name, self.send_cmd = env, lane_name, send_cmd
        self.timeout_s, self.extra_env = timeout_s, extra_env or {}
        self.calls: Counter[str] = Counter()

    def run(self, purpose: str, command: str, timeout_s: float | None = None) -> str:
        """Run a rendered command line through ``/bin/sh -c``; returns stdout.

        Raises:
            CommandError: non-zero exit or timeout.
        """
        if self.send_cmd:
            command = render(self.env, f"lane {self.lane_name} send_cmd", {"command": command},
                             source=self.send_cmd)
        self.calls[purpose] += 1
        log.debug("lane %s %s: %s", self.lane_name, purpose, command)
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                  timeout=timeout_s or self.timeout_s, env={**os.environ, **self.extra_env},
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as err:
            raise CommandError(purpose, command, None, str(err.stdout or ""), str(err.stderr or ""),
                               timed_out=True) from err
        except OSError as err:
            raise UserError(f"lane {self.lane_name}: cannot run {purpose} command {command!r}: {err}") from err
        if proc.returncode != 0:
            raise CommandError(purpose, command, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout


__all__ = ["CommandError", "CommandRunner", "Raw"]
