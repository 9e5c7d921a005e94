"""``events.jsonl``: what a worker tells the master, one JSON object per line, append-only.

Each event is written with a single ``write`` on an ``O_APPEND`` descriptor, so lines
from several threads or MPI ranks never interleave. Readers consume complete lines only
and remember their byte offset, so a half-written last line is read on the next pass.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

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


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete events after ``offset`` and the offset to resume from.

    A line that is not valid JSON (a worker killed mid-write on a filesystem without
    atomic appends) becomes a ``log`` event of level ``warning`` instead of stopping
    the reader.
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
            ev = json.loads(raw)
            if not isinstance(ev, dict) or "type" not in ev:
                raise ValueError("not an event object")
        except ValueError:
            ev = {"t": time.time(), "type": LOG, "level": "warning", "text": f"unreadable event line: {raw[:200]!r}"}
        events.append(ev)
    return events, offset + end + 1


def format_event(ev: dict[str, Any]) -> str | None:
    """A line for people, or None for events not worth showing in a log (heartbeats)."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ev.get("t", 0)))
    kind = ev.get("type")
    if kind == HEARTBEAT:
        return None
    if kind == LOG:
        level = ev.get("level", "info")
        prefix = "" if level == "info" else f"{level.upper()}: "
        return f"[{stamp}] {prefix}{ev.get('text', '')}"
    if kind == PROGRESS:
        done, total = ev.get("done"), ev.get("total")
        rate = ev.get("rate")
        extra = f" ({rate:.1f}/s)" if isinstance(rate, (int, float)) else ""
        return f"[{stamp}] progress {ev.get('what', '')} {done}/{total}{extra}".replace("  ", " ")
    if kind == OUTPUT:
        return f"[{stamp}] output {ev.get('group')}: {ev.get('num_items')} items"
    if kind == STARTED:
        return f"[{stamp}] worker started on {ev.get('host')} (pid {ev.get('pid')})"
    if kind == FAILED:
        tb = ev.get("traceback") or ""
        return f"[{stamp}] FAILED: {ev.get('message', '')}" + (f"\n{tb.rstrip()}" if tb else "")
    if kind == COMPLETED:
        return f"[{stamp}] completed"
    return f"[{stamp}] {kind}"
