"""Every scheduler command goes through one place: rendered, run with a timeout, counted,
and turned into an error that carries the command, exit code, stdout and stderr.

A lane's ``send_cmd`` runs the commands elsewhere: a template (``ssh login01 {{ command }}``)
wraps them for a local subprocess; a host mapping sends them through cryohpc's SSH session
manager to that login node, over one kept connection.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path

import jinja2

from ..errors import TransientError, UserError
from .render import Raw, render
from .siteconfig import SshHost
from .ssh import HostUnreachable, RemoteTimeout, SshRefused, sessions

log = logging.getLogger("cryohpc.lanes")


PASS_THROUGH = re.compile(r"\s*\{\{-?\s*command\s*-?\}\}\s*")  # send_cmd that adds nothing


class CommandError(TransientError):
    """A scheduler command failed or did not answer; ``timed_out`` tells which."""

    def __init__(self, purpose: str, command: str, returncode: int | None, stdout: str, stderr: str,
                 timed_out: bool = False, unsent: bool = False):
        self.purpose, self.command, self.returncode = purpose, command, returncode
        self.stdout, self.stderr, self.unsent = stdout, stderr, unsent
        self.timed_out = timed_out or unsent  # either way the outcome is unknown: retry, do not fail
        what = "could not be sent" if unsent else "timed out" if timed_out else f"exited {returncode}"
        detail = (stderr or stdout).strip().splitlines()[-3:]
        super().__init__(f"{purpose} command {what}: {command}" + (f" -- {' / '.join(detail)}" if detail else ""))


class CommandRunner:
    def __init__(self, env: jinja2.Environment, lane_name: str, send_cmd: str | SshHost | None, timeout_s: float,
                 extra_env: dict[str, str] | None = None):
        self.env, self.lane_name, self.send_cmd = env, lane_name, send_cmd
        self.timeout_s, self.extra_env = timeout_s, extra_env or {}
        self.calls: Counter[str] = Counter()

    def run(self, purpose: str, command: str, timeout_s: float | None = None, cwd: Path | None = None) -> str:
        """Run a rendered command line through ``/bin/sh -c``, in ``cwd`` if given (so
        files a scheduler drops beside the script land in the job directory); returns stdout.

        Raises:
            CommandError: non-zero exit or timeout.
        """
        self.calls[purpose] += 1
        if isinstance(self.send_cmd, SshHost):
            if cwd is not None:
                command = f"cd {shlex.quote(str(cwd))} && {command}"
            return self._run_ssh(self.send_cmd, purpose, command, timeout_s or self.timeout_s)
        if self.send_cmd and not PASS_THROUGH.fullmatch(self.send_cmd):
            # the command is one quoted word here, as ``ssh login {{ command }}`` needs; CryoSPARC's
            # pass-through ``{{ command }}`` alone runs it as it is
            command = render(self.env, f"lane {self.lane_name} send_cmd", {"command": command},
                             source=self.send_cmd)
        log.debug("lane %s %s: %s", self.lane_name, purpose, command)
        try:
            proc = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True,
                                  timeout=timeout_s or self.timeout_s, env={**os.environ, **self.extra_env},
                                  stdin=subprocess.DEVNULL, cwd=cwd)
        except subprocess.TimeoutExpired as err:
            raise CommandError(purpose, command, None, str(err.stdout or ""), str(err.stderr or ""),
                               timed_out=True) from err
        except OSError as err:
            raise UserError(f"lane {self.lane_name}: cannot run {purpose} command {command!r}: {err}") from err
        if proc.returncode != 0:
            raise CommandError(purpose, command, proc.returncode, proc.stdout, proc.stderr)
        return proc.stdout


    def _run_ssh(self, host: SshHost, purpose: str, command: str, timeout_s: float) -> str:
        """The same command on the login node; SSH failures become CommandErrors, marked
        ``timed_out`` where nothing is known to have run (so a submit is retried, not failed)."""
        exports = "".join(f"export {shlex.quote(f'{k}={v}')}; " for k, v in self.extra_env.items())
        where = f"{command} (on {host.address})"
        log.debug("lane %s %s via ssh %s: %s", self.lane_name, purpose, host.address, command)
        try:
            res = sessions().run(host, exports + command, timeout_s=timeout_s)
        except HostUnreachable as err:
            raise CommandError(purpose, where, None, "", str(err), unsent=True) from err
        except RemoteTimeout as err:
            raise CommandError(purpose, where, None, "", str(err), timed_out=True) from err
        except SshRefused as err:
            raise CommandError(purpose, where, None, "", str(err)) from err
        if res.exit_status != 0:
            raise CommandError(purpose, where, res.exit_status, res.stdout, res.stderr)
        return res.stdout


__all__ = ["CommandError", "CommandRunner", "Raw"]
