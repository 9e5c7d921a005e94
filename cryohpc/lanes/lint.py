"""Warnings about cluster lanes that load and render, yet would fail when jobs run.

Loading a lane proves its templates render; it does not prove the scheduler will answer
in a form cryohpc reads, that the status query will see the jobs, or that an MPI job gets
its ranks. Each check here renders the lane for sample jobs and reads the result the way
the scheduler and the master will, and names the line (template or site config) to fix.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

from ..model import Resources
from .cluster import SCRIPT_NAME, ClusterLane, sample_request
from .render import is_script_code

_MPI_SHAPE = Resources(cpus=8, gpus=2, ram_gb=16, mpi_ranks=4)
_SUBMITTERS = {"slurm": "sbatch", "pbs": "qsub", "sge": "qsub"}
_JOB_NAME_LINE = {"slurm": r"^#SBATCH\s+(--job-name|-J)", "pbs": r"^#PBS\s+-N\b", "sge": r"^#\$\s+-N\b"}
_JOB_NAME = {"slurm": re.compile(r"^#SBATCH\s+(?:--job-name(?:=|\s+)|-J\s*)(\S+)", re.M),
             "pbs": re.compile(r"^#PBS\s+-N\s+(\S+)", re.M), "sge": re.compile(r"^#\$\s+-N\s+(\S+)", re.M)}


def config_line(lane: ClusterLane, key: str) -> str:
    """``file:line`` of a lane's key in its site config, or the file alone."""
    source = lane.cfg.source
    if not source:
        return f"lane {lane.name}"
    try:
        root = yaml.compose(Path(source).read_text())
        lanes = next(v for k, v in root.value if k.value == "lanes")
        for entry in lanes.value:
            fields = {k.value: (k, v) for k, v in entry.value}
            if fields.get("name", (None, None))[1] is not None and fields["name"][1].value == lane.name:
                node = fields.get(key, (entry, None))[0]
                return f"{source}:{node.start_mark.line + 1}"
    except (OSError, yaml.YAMLError, StopIteration, AttributeError):
        pass
    return source


def _line_with(text: str, pattern: str) -> int | None:
    for n, line in enumerate(text.split("\n"), start=1):
        if re.search(pattern, line) and is_script_code(line):
            return n
    return None


_UNQUOTED = re.compile(r"\{\{[^}]*\|\s*unquoted\s*-?\}\}|\{\{-?\s*(?:run_cmd|mpi_launcher|cache_path)\s*-?\}\}")


def _quoted_value(line: str) -> bool:
    """Whether a ``{{ value }}`` cryohpc quotes stands inside a double-quoted shell word."""
    marked = re.sub(r"\{\{.*?\}\}", lambda m: "" if _UNQUOTED.fullmatch(m.group(0)) else "\0", line)
    inside = False
    i = 0
    while i < len(marked):
        ch = marked[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "'" and not inside:
            end = marked.find("'", i + 1)
            i = len(marked) if end < 0 else end + 1
            continue
        if ch == '"':
            inside = not inside
        elif ch == "\0" and inside:
            return True
        i += 1
    return False


def _rendered_tasks(script: str) -> int | None:
    """SLURM tasks a rendered script asks for: --ntasks, or --ntasks-per-node × --nodes."""
    def value(pattern: str) -> int | None:
        m = re.search(pattern, script, re.M)
        return int(m.group(1)) if m and m.group(1).isdigit() else None
    ntasks = value(r"^#SBATCH\s+(?:--ntasks(?:=|\s+)|-n\s*)\"?(\d+)")
    if ntasks is not None:
        return ntasks
    per_node = value(r"^#SBATCH\s+--ntasks-per-node(?:=|\s+)\"?(\d+)")
    nodes = value(r"^#SBATCH\s+(?:--nodes(?:=|\s+)|-N\s*)\"?(\d+)") or 1
    return per_node * nodes if per_node is not None else None


def lint(lane: ClusterLane) -> list[str]:
    """What would go wrong when jobs run on this lane, one warning per problem."""
    warnings: list[str] = []
    kind = lane.cfg.kind
    text, filename = lane.template_source()
    custom = lane.sample_custom()
    req = sample_request(Path("/sample/P0/J0"), Path("/sample/P0"), _MPI_SHAPE, lane.instance_uid, custom)
    variables = lane.variables(req)
    script = lane.render_script(variables)

    status = lane.commands["status"]
    if "cluster_job_id" in status:
        warnings.append(f"{config_line(lane, 'status_cmd')}: status_cmd {status!r} asks about one job "
                        "({{ cluster_job_id }}), but cryohpc asks once per poll about all the lane's jobs: use "
                        "{{ job_ids }} or {{ job_id_args }} (or leave status_cmd out for the default)")
    if not re.search(r"exit_code_path", "\n".join(li for li in text.split("\n") if is_script_code(li))):
        run = _line_with(text, r"run_cmd")
        warnings.append(f"{filename}:{run or 1}: the script does not write the exit-code sentinel: add "
                        "'echo $? > {{ exit_code_path }}' after {{ run_cmd }}; without it a job the scheduler "
                        "has forgotten cannot be told completed from failed")
    m = _JOB_NAME[kind].search(script)
    if not m or m.group(1).strip('"') != req.tag:
        line = _line_with(text, _JOB_NAME_LINE[kind]) if m else None
        warnings.append(f"{filename}:{line or 1}: the job name is "
                        f"{m.group(1) if m else 'not set'}, not {{{{ job_name }}}}: cryohpc finds its jobs at the "
                        "scheduler by that name (status queries and look-ups after a lost submit answer)")
    if kind == "slurm":
        tasks = _rendered_tasks(script)
        if tasks != _MPI_SHAPE.mpi_ranks:
            line = _line_with(text, r"^#SBATCH\s+(--ntasks|-n\b)")
            warnings.append(f"{filename}:{line or 1}: an MPI job with {_MPI_SHAPE.mpi_ranks} ranks gets "
                            f"{tasks if tasks is not None else 'the default 1'} task(s): request "
                            "--ntasks={{ num_mpi_ranks }}")
        if not re.search(rf"^#SBATCH\s+.*(?:--gres[= ]\"?gpu(?::[\w-]+)?:{_MPI_SHAPE.gpus}\b|--gpus(?:-per-node)?[= ]"
                         rf"\"?(?:[\w-]+:)?{_MPI_SHAPE.gpus}\b|-G\s*{_MPI_SHAPE.gpus}\b)", script, re.M):
            line = _line_with(text, r"^#SBATCH\s+.*(--gres|--gpus|-G\b)")
            warnings.append(f"{filename}:{line or 1}: a job needing {_MPI_SHAPE.gpus} GPUs does not ask SLURM for "
                            "them: request --gres=gpu:{{ num_gpu }} (SLURM then sets CUDA_VISIBLE_DEVICES)")
    elif not re.search(r"^#(?:PBS|\$)\s.*\b(num_mpi_ranks|num_cpu|num_cpu_per_node|num_ranks_per_node)\b", text, re.M):
        warnings.append(f"{filename}:1: no #PBS/#$ line asks for num_mpi_ranks (or num_cpu) slots: MPI jobs "
                        "would start more ranks than the scheduler gave them")
    for n, line in enumerate(text.split("\n"), start=1):
        if is_script_code(line) and _quoted_value(line):
            warnings.append(f"{filename}:{n}: a {{{{ value }}}} inside double quotes: cryohpc already quotes every "
                            "value it prints, so a value with spaces would end the quotes early; drop the quotes")
    if re.search(r"^\s*(?:srun|mpirun|mpiexec)\b[^\n]*\{\{-?\s*run_cmd", text, re.M):
        line = _line_with(text, r"(?:srun|mpirun|mpiexec)\b.*run_cmd")
        warnings.append(f"{filename}:{line}: {{{{ run_cmd }}}} already starts the job under the lane's MPI "
                        "launcher; another launcher before it starts one job per task")
    warnings += _submit_warnings(lane, variables)
    return warnings


def _submit_warnings(lane: ClusterLane, variables: dict) -> list[str]:
    """A submit command whose answer cryohpc may not read."""
    where = config_line(lane, "submit_cmd") if lane.cfg.submit_cmd else f"lane {lane.name} (default submit_cmd)"
    command = lane._command("submit", {**variables, "script_path_abs": f"/sample/P0/J0/{SCRIPT_NAME}"})
    if re.search(r"[|>]|\b2>&1\b", command):
        return [f"{where}: submit_cmd {command!r} pipes or redirects the answer: cryohpc reads the job id from "
                "what the command prints, so it may see none (then it looks the job up by name)"]
    try:
        words = shlex.split(command)
    except ValueError:
        return [f"{where}: submit_cmd {command!r} is not one shell command line"]
    program = Path(words[0]).name if words else ""
    if program != _SUBMITTERS[lane.cfg.kind]:
        return [f"{where}: submit_cmd runs {program or 'nothing'!r}, not {_SUBMITTERS[lane.cfg.kind]}: cryohpc reads "
                "the answers of sbatch, qsub and their usual forms; check this one with 'lane test --submit'"]
    return []
