"""``events.jsonl``: what a worker tells the master, one JSON object per line, append-only.

Each event is written with a single ``write`` on an ``O_APPEND`` descriptor, so lines
from several threads or MPI ranks never interleave. Readers consume complete lines only
and remember their byte offset, so a half-written last line is read on the next pass.
Read events are typed models (one per ``type``, as ``job.json`` is one); fields a newer
worker adds are ignored, and a line that is not a valid event becomes a warning.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

EVENTS_FILE = "events.jsonl"

# event types
STARTED = "started"
RUNNING = "running"
WAITING = "waiting"
HEARTBEAT = "heartbeat"
PROGRESS = "progress"
LOG = "log"
OUTPUT = "output"
CACHE = "cache"  # the SSD cache path a job actually used
COMPLETED = "completed"
FAILED = "failed"
STOPPED = "stopped"  # stopped on request (the scheduler's time-limit warning), checkpoints saved
USAGE = "usage"  # what one rank used

# What a local lane's warm worker (worker/standby.py) prints, unbuffered, on its output:
# READY once warmed up and waiting for its job, TAKEN the moment it has read the job it is
# handed. A hand-over to a ready standby counts only once it said TAKEN (lanes/warm.py).
STANDBY_READY = b"cryohpc standby: ready\n"
STANDBY_TAKEN = b"cryohpc standby: job taken\n"


class _Event(BaseModel):
    model_config = ConfigDict(extra="ignore")

    t: float = 0.0


class StartedEvent(_Event):
    type: Literal["started"] = STARTED
    pid: int | None = None
    host: str | None = None


class RunningEvent(_Event):
    type: Literal["running"] = RUNNING


class WaitingEvent(_Event):
    type: Literal["waiting"] = WAITING
    reason: str = ""


class HeartbeatEvent(_Event):
    type: Literal["heartbeat"] = HEARTBEAT


class ProgressEvent(_Event):
    type: Literal["progress"] = PROGRESS
    what: str = ""
    done: int | float | None = None
    total: int | float | None = None
    rate: float | None = None


class LogEvent(_Event):
    type: Literal["log"] = LOG
    level: str = "info"
    text: str = ""


class OutputResultFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str
    type: str = ""
    path: str
    passthrough: bool = False


class OutputEvent(_Event):
    """Results a worker saved for one output group (registered when the job completes)."""

    type: Literal["output"] = OUTPUT
    group: str
    item_type: str = "unknown"
    version: int = 0
    num_items: int = 0
    results: list[OutputResultFile] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)


class CacheEvent(_Event):
    """One rank's use of its node's SSD cache."""

    type: Literal["cache"] = CACHE
    path: str | None = None
    host: str | None = None
    copied_bytes: int = 0
    hits: int = 0
    evicted: int = 0


class CompletedEvent(_Event):
    type: Literal["completed"] = COMPLETED


class FailedEvent(_Event):
    type: Literal["failed"] = FAILED
    message: str = "failed"
    traceback: str = ""
    signal: int | None = None  # ended by this signal: whoever sent it may say why (the scheduler)


class StoppedEvent(_Event):
    """The worker stopped because it was asked to (its checkpoints are saved): run it again."""

    type: Literal["stopped"] = STOPPED
    reason: str = ""
    by_signal: bool = False  # SIGTERM asked (the scheduler says why), not the time-limit request


class UsageEvent(_Event):
    """What one rank used, measured by itself when it ends."""

    type: Literal["usage"] = USAGE
    rank: int = 0
    host: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_bytes: int = 0
    read_bytes: int = 0  # everything the process read (cache and shared filesystem)
    cache_copied_bytes: int = 0  # read from the shared filesystem into the node's SSD cache
    gpu_s: float = 0.0  # wall time with a GPU bound
    gpu_peak_bytes: int = 0


WorkerEvent = Annotated[
    StartedEvent | RunningEvent | WaitingEvent | HeartbeatEvent | ProgressEvent | LogEvent | OutputEvent
    | CacheEvent | CompletedEvent | FailedEvent | StoppedEvent | UsageEvent,
    Field(discriminator="type"),
]
_EVENT = TypeAdapter(WorkerEvent)


class EventWriter:
    def __init__(self, job_dir: Path):
        self.path = Path(job_dir) / EVENTS_FILE
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def emit(self, type_: str, **fields: Any) -> None:
        line = json.dumps({"t": time.time(), "type": type_, **fields}, default=str) + "\n"
        data = line.encode()
        with self._lock:
            os.write(self._fd, data)

    def log(self, text: str, level: str = "info") -> None:
        self.emit(LOG, level=level, text=text)

    def started(self) -> None:
        self.emit(STARTED, pid=os.getpid(), host=socket.gethostname())

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[WorkerEvent], int]:
    """Complete events after ``offset`` and the offset to resume from.

    A line that is not a valid event (a worker killed mid-write on a filesystem without
    atomic appends, a type this version does not know) becomes a ``log`` event of level
    ``warning`` instead of stopping the reader.
    """
    path = Path(job_dir) / EVENTS_FILE
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    events = []
    for raw in data[: end + 1].splitlines():
        if not raw.strip():
            continue
        try:
            ev = _EVENT.validate_json(raw)
        except ValidationError as err:
            first = err.errors()[0] if err.errors() else {"msg": "invalid", "loc": ()}
            where = ".".join(str(x) for x in first.get("loc", ()))
            problem = f"{where}: {first.get('msg', 'invalid')}" if where else first.get("msg", "invalid")
            ev = LogEvent(t=time.time(), level="warning", text=f"unreadable event line ({problem}): {raw[:200]!r}")
        events.append(ev)
    return events, offset + end + 1


def format_event(ev: WorkerEvent) -> str | None:
    """A line for people, or None for events not worth showing in a log (heartbeats)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.t))
    if isinstance(ev, HeartbeatEvent):
        return None
    if isinstance(ev, LogEvent):
        prefix = "" if ev.level == "info" else f"{ev.level.upper()}: "
        return f"[{stamp}] {prefix}{ev.text}"
    if isinstance(ev, ProgressEvent):
        extra = f" ({ev.rate:.1f}/s)" if ev.rate is not None else ""
        return f"[{stamp}] progress {ev.what} {ev.done}/{ev.total}{extra}".replace("  ", " ")
    if isinstance(ev, OutputEvent):
        return f"[{stamp}] output {ev.group}: {ev.num_items} items"
    if isinstance(ev, StartedEvent):
        return f"[{stamp}] worker started on {ev.host} (pid {ev.pid})"
    if isinstance(ev, FailedEvent):
        return f"[{stamp}] FAILED: {ev.message}" + (f"\n{ev.traceback.rstrip()}" if ev.traceback else "")
    if isinstance(ev, CompletedEvent):
        return f"[{stamp}] completed"
    if isinstance(ev, StoppedEvent):
        return f"[{stamp}] stopped to be requeued: {ev.reason}"
    if isinstance(ev, UsageEvent):
        return (f"[{stamp}] rank {ev.rank} on {ev.host}: {ev.wall_s:.1f} s wall, {ev.cpu_s:.1f} s CPU, "
                f"peak {ev.max_rss_bytes / 2**20:.0f} MiB")
    return f"[{stamp}] {ev.type}"
