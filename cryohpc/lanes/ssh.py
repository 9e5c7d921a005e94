"""One SSH session manager for the whole master: worker targets and login nodes.

Each host gets one persistent paramiko transport (with keepalive) that every command
shares through a bounded number of channels. New connections are rate-limited and
retried with jittered exponential backoff; a host that keeps failing trips a circuit
breaker, after which calls fail at once (as ``HostUnreachable``) until a cool-down
passes and one probe is let through. Host keys are verified against known_hosts; an
unknown key is refused unless the host's config says ``accept-new``.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import paramiko

from ..errors import TransientError, UserError
from .siteconfig import SshHost

log = logging.getLogger("cryohpc.ssh")

BACKOFF_BASE_S = 0.25
BACKOFF_MAX_S = 4.0


class HostUnreachable(TransientError):
    """The host did not answer (or its circuit breaker is open); nothing ran."""


class SshRefused(UserError):
    """The host answered but the connection was refused (host key, login): never retried."""


class HostKeyError(SshRefused):
    """The host's key is unknown or differs from known_hosts."""


class Throttled(HostUnreachable):
    """Our own limit on new connections per minute was reached; the host is not to blame."""


class RemoteTimeout(TransientError):
    """A command started but did not finish in time; it may still be running there."""


@dataclass
class ExecResult:
    exit_status: int
    stdout: str
    stderr: str


def fingerprint(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.fingerprint}"


def _known_hosts_name(host: SshHost) -> str:
    return host.host if host.port == 22 else f"[{host.host}]:{host.port}"


class _KeyPolicy(paramiko.MissingHostKeyPolicy):
    """Refuses an unknown key with instructions, or records it under ``accept-new``."""

    def __init__(self, cfg: SshHost):
        self.cfg = cfg

    def missing_host_key(self, client, hostname, key) -> None:
        path = Path(self.cfg.known_hosts).expanduser()
        if self.cfg.host_key_policy == "accept-new":
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as fh:
                fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            log.warning("recorded new host key of %s in %s: %s", hostname, path, fingerprint(key))
            return
        port = f"-p {self.cfg.port} " if self.cfg.port != 22 else ""
        raise HostKeyError(
            f"{hostname}: host key not known ({fingerprint(key)}); not connecting. "
            f"If this fingerprint is the host's, trust it with: ssh-keyscan {port}{self.cfg.host} >> {path} "
            f"(or set host_key_policy: accept-new for this host)")


@dataclass
class HostState:
    """What the breaker knows of one host; ``unreachable_since`` is wall-clock time."""

    failures: int = 0
    open_until: float = 0.0  # monotonic; calls before it fail at once
    unreachable_since: float | None = None
    last_error: str = ""
    last_ok: float | None = None  # wall-clock time of the last command that got through
    connects: deque = field(default_factory=deque)  # monotonic times of recent connections made


class _Host:
    def __init__(self, cfg: SshHost):
        self.cfg = cfg
        self.lock = threading.Lock()  # guards connecting and the state
        self.client: paramiko.SSHClient | None = None
        self.channels = threading.BoundedSemaphore(cfg.max_channels)
        self.state = HostState()


class SshSessions:
    """The session manager; ``stats`` counts transports opened, commands and failures."""

    def __init__(self) -> None:
        self._hosts: dict[tuple, _Host] = {}
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def _host(self, cfg: SshHost) -> _Host:
        key = (cfg.user, cfg.host, cfg.port)
        with self._lock:
            h = self._hosts.get(key)
            if h is None:
                h = self._hosts[key] = _Host(cfg)
            else:
                h.cfg = cfg  # a reloaded site config changes limits, not the connection
            return h

    def is_open(self, cfg: SshHost) -> bool:
        """True while the breaker refuses calls to this host."""
        return time.monotonic() < self._host(cfg).state.open_until

    def reachability(self, cfg: SshHost) -> tuple[str, float | None, str]:
        """(state, since, detail): ``unreachable`` once the breaker opened, ``failing``
        before that, ``reachable`` after a command got through, else ``unknown``."""
        st = self._host(cfg).state
        if self.is_open(cfg):
            return "unreachable", st.unreachable_since, st.last_error
        if st.unreachable_since is not None:
            return "failing", st.unreachable_since, st.last_error
        if st.last_ok is not None:
            return "reachable", st.last_ok, ""
        return "unknown", None, ""

    # -- connecting ---------------------------------------------------------------------
    def _connect(self, h: _Host) -> paramiko.SSHClient:
        cfg, st = h.cfg, h.state
        t = time.monotonic()
        while st.connects and t - st.connects[0] > 60:
            st.connects.popleft()
        if len(st.connects) >= cfg.max_connects_per_min:
            raise Throttled(f"{cfg.address}: {len(st.connects)} connections opened in the last minute "
                            f"(limit {cfg.max_connects_per_min}); waiting")
        self.stats["connect_attempts"] += 1
        client = paramiko.SSHClient()
        known = Path(cfg.known_hosts).expanduser()
        if known.exists():
            client.load_host_keys(str(known))
        client.set_missing_host_key_policy(_KeyPolicy(cfg))
        try:
            client.connect(cfg.host, port=cfg.port, username=cfg.user, key_filename=cfg.identity_file,
                           look_for_keys=cfg.identity_file is None, timeout=cfg.connect_timeout_s,
                           banner_timeout=cfg.connect_timeout_s, auth_timeout=cfg.connect_timeout_s)
        except paramiko.BadHostKeyException as err:
            client.close()
            raise HostKeyError(
                f"{_known_hosts_name(cfg)}: HOST KEY MISMATCH: it offered {fingerprint(err.key)}, but {known} "
                f"holds {fingerprint(err.expected_key)} for it. Someone may be intercepting the connection, or the "
                f"host was reinstalled; if so, remove the old line from {known} and trust the new key.") from None
        except HostKeyError:
            client.close()
            raise
        except paramiko.AuthenticationException as err:
            client.close()
            raise SshRefused(f"{cfg.address}: login as {cfg.user or 'the current user'} failed: {err}") from None
        except (OSError, paramiko.SSHException, EOFError) as err:
            transport = client.get_transport()
            cause = str(err) or type(err).__name__
            if transport is not None and not transport.remote_version:  # paramiko says "No existing session"
                cause = (f"no SSH banner within {cfg.connect_timeout_s:g} s "
                         "(the port accepts connections but nothing answers: a hung host?)")
            client.close()
            raise HostUnreachable(f"{cfg.address}: cannot connect: {cause}") from None
        st.connects.append(t)  # only connections made count: failing attempts are the breaker's
        transport = client.get_transport()
        # small request/answer packets: without this, Nagle + delayed ACK add ~40 ms per channel
        transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if cfg.keepalive_s:
            transport.set_keepalive(cfg.keepalive_s)
        self.stats["transports_opened"] += 1
        log.info("ssh: connected to %s", cfg.address)
        return client

    def _client(self, h: _Host) -> paramiko.SSHClient:
        """The host's live connection, opened (with retries) if it has none."""
        with h.lock:
            st = h.state
            if h.client is not None and h.client.get_transport() and h.client.get_transport().is_active():
                return h.client
            if h.client is not None:
                h.client.close()
                h.client = None
            if time.monotonic() < st.open_until:
                raise HostUnreachable(f"{h.cfg.address}: unreachable since {_clock(st.unreachable_since)} "
                                      f"({st.last_error}); next try in {st.open_until - time.monotonic():.0f} s")
            attempt = 0
            while True:
                try:
                    h.client = self._connect(h)
                    break
                except Throttled:
                    raise
                except HostUnreachable as err:
                    self._record_failure(h, str(err))
                    if time.monotonic() < st.open_until or attempt >= h.cfg.retries:
                        raise
                time.sleep(random.uniform(0, min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2**attempt)))
                attempt += 1
            if st.unreachable_since is not None:
                log.warning("ssh: %s is reachable again", h.cfg.address)
            h.state = HostState(connects=st.connects)
            return h.client

    def _record_failure(self, h: _Host, message: str) -> None:
        st = h.state
        st.failures += 1
        st.last_error = message
        self.stats["connect_failures"] += 1
        if st.unreachable_since is None:
            st.unreachable_since = time.time()
        if st.failures >= h.cfg.breaker_threshold:
            st.open_until = time.monotonic() + h.cfg.breaker_cooldown_s
            log.warning("ssh: %s marked unreachable for %.0f s: %s", h.cfg.address, h.cfg.breaker_cooldown_s, message)

    def _drop(self, h: _Host, client: paramiko.SSHClient, message: str) -> None:
        with h.lock:
            if h.client is client:
                client.close()
                h.client = None
                self._record_failure(h, message)

    # -- running commands --------------------------------------------------------------
    def run(self, cfg: SshHost, command: str, timeout_s: float = 60.0) -> ExecResult:
        """Run ``command`` through the remote user's shell.

        Raises:
            HostUnreachable: could not connect, the breaker is open, or the connection
                dropped before the command started.
            SshRefused: the host key is unknown or wrong (HostKeyError), or login was refused.
            RemoteTimeout: the command ran past ``timeout_s``.
        """
        h = self._host(cfg)
        client = self._client(h)
        if not h.channels.acquire(timeout=timeout_s):
            raise RemoteTimeout(f"{cfg.address}: all {cfg.max_channels} channels stayed busy for {timeout_s:.0f} s")
        try:
            self.stats["commands"] += 1
            try:
                chan = client.get_transport().open_session(timeout=cfg.connect_timeout_s)
                chan.exec_command(command)
            except (OSError, paramiko.SSHException, EOFError, AttributeError) as err:
                self._drop(h, client, f"connection lost: {err or type(err).__name__}")
                raise HostUnreachable(f"{cfg.address}: connection lost before the command started: {err}") from None
            result = self._collect(h, client, chan, command, timeout_s)
            h.state.last_ok = time.time()
            return result
        finally:
            h.channels.release()

    def _collect(self, h: _Host, client, chan: paramiko.Channel, command: str, timeout_s: float) -> ExecResult:
        deadline = time.monotonic() + timeout_s
        out, err = bytearray(), bytearray()
        try:
            chan.shutdown_write()
            while True:
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    return ExecResult(chan.recv_exit_status(), out.decode(errors="replace"),
                                      err.decode(errors="replace"))
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteTimeout(f"{h.cfg.address}: command did not finish in {timeout_s:.0f} s: {command}")
                if chan.closed and not client.get_transport().is_active():
                    self._drop(h, client, "connection lost")
                    raise HostUnreachable(f"{h.cfg.address}: connection lost while running: {command}")
                select.select([chan], [], [], min(left, 1.0))
        except (OSError, paramiko.SSHException, EOFError) as err:
            self._drop(h, client, f"connection lost: {err}")
            raise HostUnreachable(f"{h.cfg.address}: connection lost while running {command}: {err}") from None
        finally:
            chan.close()

    def close_all(self) -> None:
        with self._lock:
            hosts = list(self._hosts.values())
        for h in hosts:
            with h.lock:
                if h.client is not None:
                    h.client.close()
                    h.client = None


def _clock(t: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if t else "?"


_SESSIONS: SshSessions | None = None
_SESSIONS_LOCK = threading.Lock()


def sessions() -> SshSessions:
    """The process's session manager: every lane shares it, so a host has one transport."""
    global _SESSIONS
    with _SESSIONS_LOCK:
        if _SESSIONS is None:
            _SESSIONS = SshSessions()
        return _SESSIONS
