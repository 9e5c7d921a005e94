"""``lane test``: a cluster lane tried as jobs will use it.

Rendering proves a template is well formed; only the scheduler can say it accepts the
request. So each resource shape (one CPU, a multi-GPU MPI job, the largest node the
cluster has, or the admin's own) is rendered and, where the scheduler can, submitted in
test-only mode (``sbatch --test-only``). With ``submit``, a real tiny job (``lane_probe``)
goes through the lane end to end, each step timed: submitted and its answer parsed, seen
by the status query, its exit code read, its output back on the shared filesystem.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..events import COMPLETED, FAILED, read_events
from ..jobfile import CacheSettings, JobFile
from ..model import Resources
from .base import LaunchRequest, RunHandle, RunState, job_tag
from .cluster import SCRIPT_NAME, ClusterLane, sample_request
from .render import render
from .runner import CommandError

SHAPE_KEYS = {"cpus": int, "gpus": int, "ranks": int, "ram_gb": float}


@dataclass
class Step:
    what: str
    ok: bool
    seconds: float
    detail: str = ""

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what} ({self.seconds:.1f} s){': ' + self.detail if self.detail else ''}"


@dataclass
class Report:
    steps: list[Step] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.steps)

    def add(self, what: str, ok: bool, started: float, detail: str = "") -> Step:
        step = Step(what, ok, time.monotonic() - started, detail.strip()[:2000])
        self.steps.append(step)
        return step


def parse_shape(text: str) -> Resources:
    """``cpus=8,gpus=2,ranks=2,ram_gb=64`` (any subset) as resources.

    Raises:
        UserError: an unknown key or a value that is not a positive number.
    """
    values: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in SHAPE_KEYS:
            raise UserError(f"--shape {text!r}: {part!r} is not one of {', '.join(f'{k}=N' for k in SHAPE_KEYS)}")
        try:
            values[key] = SHAPE_KEYS[key](value)
        except ValueError:
            raise UserError(f"--shape {text!r}: {key} must be a number, not {value!r}") from None
        if values[key] < (0 if key == "gpus" else 1):
            raise UserError(f"--shape {text!r}: {key} must be at least {0 if key == 'gpus' else 1}")
    ranks = values.pop("ranks", 1)
    return Resources(cpus=max(values.pop("cpus", ranks), ranks), mpi_ranks=ranks, **values)


def _largest(lane: ClusterLane) -> tuple[Resources | None, str]:
    """The biggest node SLURM lists (CPUs, memory, GPUs), or why it is not known."""
    if lane.cfg.kind != "slurm":
        return None, f"the largest shape needs sinfo ({lane.cfg.kind} has no equivalent cryohpc reads)"
    try:
        out = lane.runner.run("info", "sinfo -h -N -o '%c|%m|%G'")
    except CommandError as err:
        return None, f"sinfo failed: {err}"
    best = None
    for row in out.splitlines():
        parts = row.strip().split("|")
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        gpus = sum(int(n) for n in re.findall(r"gpu(?::[\w-]+)?:(\d+)", parts[2]))
        mem = int(re.sub(r"\D.*", "", parts[1]) or 1000)
        shape = Resources(cpus=int(parts[0]), gpus=gpus, ram_gb=max(mem // 1000, 1), mpi_ranks=max(gpus, 1))
        if best is None or (shape.gpus, shape.cpus, shape.ram_gb) > (best.gpus, best.cpus, best.ram_gb):
            best = shape
    return best, "" if best else f"sinfo listed no nodes: {out.strip()[:200]!r}"


def describe(shape: Resources) -> str:
    return f"{shape.cpus} CPU, {shape.gpus} GPU, {shape.ram_gb:g} GB, {shape.mpi_ranks} rank(s)"


def try_shapes(lane: ClusterLane, shapes: list[Resources] | None, custom: dict[str, Any]) -> Report:
    """The info command, then each shape rendered and test-submitted where possible."""
    report = Report()
    started = time.monotonic()
    try:
        info = lane.runner.run("info", lane._command("info", {}))
        report.add("info command", True, started, info.strip().splitlines()[0] if info.strip() else "")
    except CommandError as err:
        report.add("info command", False, started, str(err))
    if shapes is None:
        shapes = [Resources(cpus=1, gpus=0, ram_gb=2, mpi_ranks=1), Resources(cpus=4, gpus=2, ram_gb=8, mpi_ranks=2)]
        started = time.monotonic()
        largest, why = _largest(lane)
        if largest is not None:
            shapes.append(largest)
        else:
            report.add("largest shape", True, started, f"skipped: {why}")
    for shape in shapes:
        started = time.monotonic()
        with tempfile.TemporaryDirectory() as tmp:
            req = sample_request(Path(tmp), Path(tmp), shape, lane.instance_uid, custom, creator="lane-test")
            variables = lane.variables(req)
            (Path(tmp) / SCRIPT_NAME).write_text(lane.render_script(variables))
            if not lane.kind.test:
                report.add(describe(shape), True, started,
                           f"rendered; {lane.cfg.kind} has no test-only submit (try --submit)")
                continue
            command = render(lane.env, f"{lane.where} test", variables, source=lane.kind.test) + " 2>&1"
            try:
                out = lane.runner.run("test", command)
                report.add(describe(shape), True, started, out)
            except CommandError as err:
                report.add(describe(shape), False, started, (err.stdout or err.stderr or str(err)))
    return report


def submit_probe(lane: ClusterLane, instance_uid: str, folder: Path, shape: Resources, custom: dict[str, Any],
                 timeout_s: float = 300.0, keep: bool = False) -> Report:
    """A real ``lane_probe`` job through the lane, each step timed; cancelled if it does
    not finish within ``timeout_s``. ``folder`` must be on the filesystem the nodes share."""
    report = Report()
    job_uid = f"T{secrets.token_hex(3)}"
    project_dir = folder / f"{lane.name}-{time.strftime('%Y%m%d-%H%M%S')}-{job_uid}"
    job_dir = project_dir / job_uid
    job_dir.mkdir(parents=True)
    settings = lane.cache_settings()
    JobFile(instance_uid=instance_uid, project_uid="P0", job_uid=job_uid, type="lane_probe",
            title="lane test", params={}, project_dir=str(project_dir), job_dir=str(job_dir), resources=shape,
            heartbeat_interval_s=5.0, cache=CacheSettings(**settings) if settings else None,
            created_at=time.time()).write(job_dir)
    req = LaunchRequest(project_uid="P0", job_uid=job_uid, job_type="lane_probe", job_title="lane test",
                        job_creator="lane-test", job_dir=job_dir, project_dir=project_dir, command=[], env={},
                        resources=shape, tag=job_tag(instance_uid, "P0", job_uid), custom=custom)
    started = time.monotonic()
    try:
        launched = lane.launch(req)
    except Exception as err:  # every launch failure is this step's result, reported, not raised
        report.add("submitted", False, started, str(err))
        return _finish(report, project_dir, keep)
    report.add("submitted, answer parsed", True, started, f"cluster job id {launched.cluster_job_id}")
    handle = RunHandle(ref=req.ref, job_dir=job_dir, cluster_job_id=launched.cluster_job_id, tag=req.tag)
    started = time.monotonic()
    deadline = started + timeout_s
    seen = exited = None
    while time.monotonic() < deadline:
        result = lane.poll([handle])[handle.ref]
        if seen is None and result.scheduler_status:
            seen = report.add("seen by the status query", True, started, result.scheduler_status)
        if result.state == RunState.EXITED and result.exit_code is not None:
            exited = result
            break
        time.sleep(0.5)
    if exited is None:
        if seen is None:
            report.add("seen by the status query", False, started, "never listed; check status_cmd")
        report.add("exit code read", False, started, f"not within {timeout_s:.0f} s; cancelling the job")
        try:
            lane.kill(handle)
        except CommandError as err:
            report.add("cancelled", False, time.monotonic(), str(err))
        return _finish(report, project_dir, True)
    if seen is None:
        report.add("seen by the status query", False, started,
                   "the job ended before any status query listed it (too fast to tell, or status_cmd misses it)")
    report.add("exit code read", exited.exit_code == 0, started, f"{exited.exit_code}"
               + (f" ({exited.detail})" if exited.detail else ""))
    started = time.monotonic()
    events, _ = read_events(job_dir)
    probe = job_dir / "probe.json"
    if any(e.type == COMPLETED for e in events) and probe.exists():
        data = json.loads(probe.read_text())
        ranks = data.get("ranks", [])
        hosts = sorted({r["host"] for r in ranks})
        caches = sorted({str(r["cache"].get("path")) + ("" if r["cache"].get("writable", True) else " (NOT writable)")
                         for r in ranks if r["cache"].get("configured")})
        ok = len(ranks) == shape.mpi_ranks and all(r["cache"].get("writable", True) for r in ranks)
        report.add("outputs back", ok, started, f"{len(ranks)} of {shape.mpi_ranks} rank(s) on {', '.join(hosts)}; "
                                                f"cache {', '.join(caches) or 'none configured'}")
    else:
        failed = next((e for e in events if e.type == FAILED), None)
        report.add("outputs back", False, started, (failed.message if failed else
                                                    f"no probe.json; see {job_dir / 'job.log'}"))
    return _finish(report, project_dir, keep or not report.ok)


def _finish(report: Report, project_dir: Path, keep: bool) -> Report:
    if keep:
        report.steps.append(Step("job directory kept", True, 0.0, str(project_dir)))
    else:
        shutil.rmtree(project_dir, ignore_errors=True)
    return report
