"""What differs between SLURM, PBS and SGE: default commands, how to read their answers,
and one table per scheduler from its state codes to what cryohpc does with them.

Status, find and history commands are templates that receive the lane's own job ids
(``{{ job_ids }}``: comma-separated, one word; ``{{ job_id_args }}``: one word per id),
their tags (``{{ job_names }}``) or one job's tag (``{{ job_name }}``), so the defaults
ask only about cryohpc's jobs, never list the whole cluster. A scheduler that answers "no such job" for an id it forgot has
answered (``missing_ids``); any other failure is "unknown, ask again later".

An unknown state code is reported with the raw code, never guessed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    PENDING = "pending"  # queued at the scheduler: no heartbeat expected yet
    RUNNING = "running"
    DONE = "done"  # ended normally: events decide completed/failed
    ENDED_BADLY = "ended_badly"  # the scheduler ended it (timeout, cancel, node failure...)


@dataclass(frozen=True)
class SchedulerStatus:
    job_id: str
    code: str  # the scheduler's own state code
    reason: str = ""
    nodes: str = ""  # where it runs or ran, when the scheduler says


@dataclass(frozen=True)
class SchedulerKind:
    name: str
    submit: str
    status: str
    cancel: str
    info: str
    find: str
    test: str | None
    states: dict[str, Phase]
    parse_submit: Callable[[str], str]
    parse_status: Callable[[str], list[SchedulerStatus]]
    parse_find: Callable[[str], list[str]]  # ids of the live (queued or running) jobs carrying the tag
    missing_ids: str  # regex: stderr of a status/find query that only says "no such job"
    history: str | None = None  # verdicts of jobs that left the queue (SLURM: sacct)
    accounting: str | None = None  # what ended jobs used, as the scheduler accounts it (SLURM: sacct)

    def phase(self, code: str) -> Phase | None:
        return self.states.get(code.upper()) or self.states.get(code)


# Every form the supported schedulers answer a submission with; each captures the id.
_SUBMIT_ANSWERS = (
    re.compile(r"^\s*Submitted batch job (\d+)(?: on cluster \S+)?\s*$"),  # SLURM sbatch
    re.compile(r"^\s*(\d+)(?:;\S+)?\s*$"),  # SLURM --parsable ("123" or "123;cluster"), SGE -terse
    re.compile(r"^\s*(\d+\.[A-Za-z][\w.-]*)\s*$"),  # PBS/Torque "123.server[.domain]"
    re.compile(r"^\s*(\d+)\.\d+-\d+:\d+\s*$"),  # SGE -terse array "123.1-10:1"
    re.compile(r"^\s*Your job(?:-array)? (\d+)(?:\.\S+)? \(.*\) has been submitted\s*$"),  # SGE
)


def parse_submit_answer(out: str) -> str:
    """The job id in a submit command's answer, in any of the forms SLURM (plain and
    ``--parsable``, ``cluster`` suffix), PBS (``123.server``) and SGE (``Your job 123
    ("name") has been submitted``, ``-terse``, arrays) give. Other lines (``sbatch:
    warning: ...``, a wrapper's banner) are skipped; the last line that matches wins.

    Raises:
        ValueError: no line of the answer carries a job id.
    """
    for line in reversed(out.strip().splitlines()):
        for form in _SUBMIT_ANSWERS:
            m = form.match(line)
            if m:
                return m.group(1)
    raise ValueError(f"no job id in the submit command's answer: {out.strip()[:200]!r}")


def _ids_per_line(out: str) -> list[str]:
    """qselect's answer: one job id per line."""
    return [line.split()[0] for line in out.splitlines() if re.match(r"^\s*\d", line)]


def _parse_pipe_table(out: str) -> list[SchedulerStatus]:
    rows = []
    for line in out.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            rows.append(SchedulerStatus(parts[0], parts[1], parts[2] if len(parts) > 2 else "",
                                        parts[3] if len(parts) > 3 and parts[3] not in ("(null)", "None") else ""))
    return rows


SLURM = SchedulerKind(
    name="slurm",
    submit="sbatch --parsable {{ script_path_abs }}",
    # by name: a list of names costs squeue what one does, a list of ids grows with the queue
    status="squeue -h -t all --me -n {{ job_names }} -o '%i|%T|%r|%N'",
    cancel="scancel {{ cluster_job_id }}",
    info="sinfo",
    find="squeue -h -n {{ job_name }} -o '%i|%T|%r'",
    history="sacct -n -X -P -j {{ job_ids }} -o JobIDRaw,State,Reason,NodeList",
    accounting="sacct -n -P -j {{ job_ids }} -o JobIDRaw,State,ElapsedRaw,TotalCPU,MaxRSS,AllocTRES",
    test="sbatch --test-only {{ script_path_abs }}",
    states={
        **{c: Phase.PENDING for c in ("PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
                                       "RESIZING", "SUSPENDED", "STOPPED", "RESV_DEL_HOLD")},
        **{c: Phase.RUNNING for c in ("RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING")},
        "COMPLETED": Phase.DONE,
        **{c: Phase.ENDED_BADLY for c in ("FAILED", "BOOT_FAIL", "DEADLINE", "NODE_FAIL", "OUT_OF_MEMORY",
                                           "TIMEOUT", "CANCELLED", "PREEMPTED", "SPECIAL_EXIT", "REVOKED")},
    },
    parse_submit=parse_submit_answer,
    parse_status=_parse_pipe_table,
    parse_find=lambda out: [r.job_id for r in _parse_pipe_table(out)],  # squeue lists live jobs by default
    missing_ids=r"Invalid job id specified",
)


def _parse_qstat_table(out: str, id_col: int, state_col: int) -> list[SchedulerStatus]:
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) <= max(id_col, state_col) or not re.match(r"^\d", parts[id_col]):
            continue  # headers, separators
        rows.append(SchedulerStatus(parts[id_col], parts[state_col]))
    return rows


PBS = SchedulerKind(
    name="pbs",
    submit="qsub {{ script_path_abs }}",
    status="qstat {{ job_id_args }}",
    cancel="qdel {{ cluster_job_id }}",
    info="qstat -Q",
    find="qselect -N {{ job_name }}",
    test=None,
    # Torque/OpenPBS single-letter states
    states={
        **{c: Phase.PENDING for c in ("Q", "H", "W", "T", "S", "U", "B")},
        **{c: Phase.RUNNING for c in ("R", "E", "X")},
        **{c: Phase.DONE for c in ("C", "F")},
    },
    parse_submit=parse_submit_answer,
    # "Job id  Name  User  Time Use S Queue"
    parse_status=lambda out: _parse_qstat_table(out, 0, 4),
    parse_find=_ids_per_line,
    missing_ids=r"Unknown Job Id|Job has finished|Invalid job id specified",
)

SGE = SchedulerKind(
    name="sge",
    submit="qsub -terse {{ script_path_abs }}",
    status="qstat",
    cancel="qdel {{ cluster_job_id }}",
    info="qhost",
    find="qstat -j {{ job_name }}",
    test=None,
    states={
        **{c: Phase.PENDING for c in ("QW", "HQW", "HRWQ", "S", "ST", "T", "RQ", "HQ")},
        **{c: Phase.RUNNING for c in ("R", "RR", "RT", "DR", "DT")},
        **{c: Phase.ENDED_BADLY for c in ("EQW", "EHQW", "EHRQW", "E")},
    },
    parse_submit=parse_submit_answer,
    # "job-ID prior name user state submit/start at queue slots ja-task-ID"; plain qstat
    # lists only the submitting user's jobs (SGE has no id filter for the table)
    parse_status=lambda out: _parse_qstat_table(out, 0, 4),
    parse_find=lambda out: re.findall(r"^job_number:\s+(\d+)", out, flags=re.M),
    # "Following jobs do not exist or permissions are not sufficient:" then the names asked
    missing_ids=r"do not exist|^\s*cryohpc_\S*\s*$",
)

KINDS: dict[str, SchedulerKind] = {k.name: k for k in (SLURM, PBS, SGE)}


_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _seconds(text: str) -> float:
    """sacct's durations: ``[DD-][HH:]MM:SS[.mmm]``."""
    days, _, clock = text.rpartition("-") if "-" in text else ("0", "", text)
    parts = [float(x) for x in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0.0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def _bytes(text: str) -> int:
    text = text.strip()
    if not text:
        return 0
    unit = text[-1].upper() if text[-1].isalpha() else ""
    return int(float(text[:-1] if unit else text) * _SIZE_UNITS.get(unit, 1))


def parse_sacct_usage(out: str) -> dict[str, dict]:
    """Per job id, from ``JobIDRaw|State|ElapsedRaw|TotalCPU|MaxRSS|AllocTRES`` rows (the
    allocation's row and its steps'): the allocation's state, elapsed and CPU time and TRES,
    the largest step's MaxRSS. Jobs whose allocation row is missing or not ended are left out.

    Raises:
        ValueError: a row that is not in that form.
    """
    jobs: dict[str, dict] = {}
    peaks: dict[str, int] = {}
    for line in out.splitlines():
        if not line.strip():
            continue
        parts = line.strip().split("|")
        if len(parts) < 6:
            raise ValueError(f"sacct row {line.strip()[:120]!r} has {len(parts)} fields, not 6")
        raw, state, elapsed, cpu, rss, tres = parts[:6]
        base = raw.split(".", 1)[0]
        peaks[base] = max(peaks.get(base, 0), _bytes(rss))
        if "." not in raw:
            fields = dict(item.split("=", 1) for item in tres.split(",") if "=" in item)
            jobs[base] = {"state": state.split(" ", 1)[0], "elapsed_s": float(elapsed or 0), "cpu_s": _seconds(cpu),
                          "tres": tres, "billing": float(fields.get("billing", 0) or 0)}
    for base, row in jobs.items():
        row["max_rss_bytes"] = peaks.get(base, 0)
    return {k: v for k, v in jobs.items() if SLURM.phase(v["state"]) not in (Phase.PENDING, Phase.RUNNING, None)}


def strip_server(job_id: str) -> str:
    """PBS ids carry the server ("123.head"); tables may show them shortened."""
    return job_id.split(".", 1)[0]
