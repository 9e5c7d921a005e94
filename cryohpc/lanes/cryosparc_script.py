"""A CryoSPARC ``cluster_script.sh`` made into a cryohpc template, and back.

Both are Jinja2 over a batch script, and most variables mean the same. What differs is
what cryohpc relies on: the job name carries its tag (status and look-ups find jobs by
it), the script writes the exit-code sentinel, an MPI job asks for one task per rank, and
the job runs ``{{ run_cmd }}`` (cryohpc's launcher and worker), not ``cryosparcw run``.

Every edit is one line, and the line keeps what it was in a Jinja comment at its end
(``{# cryohpc: was: ... #}``, nothing when rendered), so ``export`` can restore the
CryoSPARC script exactly and an admin reading the template sees each change where it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .render import is_script_code

# what cryohpc gives every template and command (cluster.ClusterLane.variables and friends)
PROVIDED = frozenset({
    "script_path_abs", "run_cmd", "run_args", "worker_bin_path", "num_cpu", "num_gpu", "ram_gb", "num_nodes",
    "num_mpi_ranks", "num_ranks_per_node", "num_cpu_per_node", "num_gpu_per_node", "ram_gb_per_node",
    "stop_warning_s", "stop_request_path", "mpi_launcher", "job_dir_abs", "project_dir_abs", "job_log_path_abs", "exit_code_path",
    "project_uid", "job_uid", "job_type", "job_creator", "job_title", "job_name", "job_name_prefix",
    "instance_uid", "cache_path", "cache_quota_mb", "cache_reserve_mb", "lane_name", "cluster_job_id",
    "job_ids", "job_id_args", "job_names", "command"})
# what CryoSPARC gives its scripts and commands (its documented list)
CRYOSPARC_PROVIDED = frozenset({
    "script_path_abs", "run_cmd", "run_args", "worker_bin_path", "num_cpu", "num_gpu", "ram_gb", "job_dir_abs",
    "project_dir_abs", "job_log_path_abs", "project_uid", "job_uid", "job_type", "job_creator",
    "cryosparc_username", "cluster_job_id", "command", "src_path", "dest_path"})
CRYOHPC_ONLY = PROVIDED - CRYOSPARC_PROVIDED
MARK = "{# cryohpc: "
_MARKED = re.compile(r"\{# cryohpc: (added|was: (.*?)) #\}$")
# CryoSPARC names cryohpc spells differently (the value is the same)
RENAMED = {"cryosparc_username": "job_creator"}
SENTINEL = 'cryohpc_rc=$?; echo "$cryohpc_rc" > {{ exit_code_path }}; (exit "$cryohpc_rc")'
_TAG = re.compile(r"\{\{.*?\}\}|\{%.*?%\}", re.S)
_CRYOSPARCW = re.compile(r"\{\{-?\s*worker_bin_path\s*-?\}\}\s+run\s+\{\{-?\s*run_args\s*-?\}\}[^>|;&]*")
_DIRECTIVE = {"slurm": "#SBATCH", "pbs": "#PBS", "sge": "#$"}
_JOB_NAME = {"slurm": re.compile(r"^#SBATCH\s+(?:--job-name(?:=|\s+)|-J\s*)\S.*$"),
             "pbs": re.compile(r"^#PBS\s+-N\s+\S.*$"), "sge": re.compile(r"^#\$\s+-N\s+\S.*$")}
_JOB_NAME_LINE = {"slurm": "#SBATCH --job-name={{ job_name }}", "pbs": "#PBS -N {{ job_name }}",
                  "sge": "#$ -N {{ job_name }}"}
_VALUE = r"(\{\{.*?\}\}|\S+)"
_NTASKS = re.compile(r"^#SBATCH\s+(?:--ntasks(?:-per-node)?(?:=|\s+)|-n\s*)" + _VALUE + r"\s*$")
_CPUS_PER_TASK = re.compile(r"^#SBATCH\s+(?:--cpus-per-task(?:=|\s+)|-c\s*)" + _VALUE + r"\s*$")
_RUN_CMD = re.compile(r"\{\{-?\s*run_cmd\s*-?\}\}")


@dataclass
class Change:
    """One line the import changed or added, and why (for the admin's summary)."""

    line: int  # 1-based, in the new template
    old: str | None  # None: added
    new: str
    why: str


@dataclass
class Converted:
    template: str
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("#}", "#\\}")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def _expr(value: str) -> str:
    """A directive's value as a Jinja expression: ``{{ e }}`` gives ``(e)``, ``4`` gives ``4``."""
    m = re.fullmatch(r"\{\{-?\s*(.*?)\s*-?\}\}", value)
    if not m:
        return value
    return m.group(1) if re.fullmatch(r"[A-Za-z_]\w*|\d+", m.group(1)) else f"({m.group(1)})"


def _rename(line: str) -> str:
    def inside(m: re.Match) -> str:
        text = m.group(0)
        for old, new in RENAMED.items():
            text = re.sub(rf"(?<![\w.]){old}\b", new, text)
        return text
    return _TAG.sub(inside, line)


def to_cryohpc(script: str, kind: str) -> Converted:
    """The cryohpc template for a CryoSPARC script of a ``kind`` scheduler.

    Raises:
        ValueError: the script never runs the job (no ``{{ run_cmd }}`` nor
            ``{{ worker_bin_path }} run {{ run_args }}``).
    """
    out = Converted("")
    lines = script.split("\n")
    new: list[tuple[str, str | None, str | None]] = []  # (line, original or None if added, why)

    def edit(i: int, text: str, why: str) -> None:
        line, old, _ = new[i]
        new[i] = (text, old if old is not None else line, why)

    for raw in lines:
        new.append((raw, None, None))
        i = len(new) - 1
        text = _rename(raw)  # comments too: a name they print must exist when rendered
        if text != raw:
            edit(i, text, f"CryoSPARC's {', '.join(k for k in RENAMED if k in raw)} is cryohpc's "
                          f"{', '.join(v for k, v in RENAMED.items() if k in raw)}")
        if not is_script_code(raw):
            continue
        if _CRYOSPARCW.search(new[i][0]):
            dropped = _CRYOSPARCW.search(new[i][0]).group(0)
            edit(i, _CRYOSPARCW.sub("{{ run_cmd }} ", new[i][0]).replace("{{ run_cmd }}  ", "{{ run_cmd }} ").rstrip(),
                 "cryohpc's worker runs as {{ run_cmd }} (launcher and worker); "
                 f"dropped {dropped.strip()!r}")
        if _JOB_NAME[kind].match(new[i][0]) and "job_name" not in new[i][0]:
            edit(i, _JOB_NAME_LINE[kind], "cryohpc finds its jobs at the scheduler by this name (its tag)")
    if not any(_RUN_CMD.search(line) and is_script_code(line) for line, _, _ in new):
        raise ValueError("the script never runs the job: no line holds {{ run_cmd }} "
                         "(nor {{ worker_bin_path }} run {{ run_args }})")
    directive = _DIRECTIVE[kind]
    directives = [i for i, (line, _, _) in enumerate(new) if line.startswith(directive)]
    after_directives = (directives[-1] + 1) if directives else (1 if new and new[0][0].startswith("#!") else 0)
    added: list[tuple[int, str, str]] = []  # (insert before index, line, why)
    if not any(_JOB_NAME[kind].match(line) for line, _, _ in new):
        added.append((after_directives, _JOB_NAME_LINE[kind], "cryohpc finds its jobs at the scheduler by this "
                                                              "name (its tag)"))
    if kind == "slurm":
        added += _slurm_tasks(new, edit, after_directives)
    elif not any("num_mpi_ranks" in line and is_script_code(line) for line, _, _ in new):
        out.warnings.append(f"MPI jobs need num_mpi_ranks slots: add them to the {directive} resource request "
                            "by hand (cryohpc edits only SLURM's)")
    if not any("exit_code_path" in line and is_script_code(line) for line, _, _ in new):
        run = max(i for i, (line, _, _) in enumerate(new) if _RUN_CMD.search(line) and is_script_code(line))
        added.append((run + 1, SENTINEL, "the exit code tells cryohpc how the job ended when the scheduler forgets it"))
    for i, (line, _, _) in enumerate(new):
        if is_script_code(line) and re.search(r"\b(srun|mpirun|mpiexec)\s+\{\{-?\s*run_cmd", line):
            out.warnings.append(f"line {i + 1}: {line.strip()!r} starts {{{{ run_cmd }}}} under another launcher; "
                                "run_cmd already holds cryohpc's MPI launcher (mpi_launcher), so MPI jobs would "
                                "start once per task")
    for at, line, why in sorted(added, key=lambda a: a[0], reverse=True):
        new.insert(at, (line, None, why))
    result = []
    for n, (line, old, why) in enumerate(new, start=1):
        if why is None:
            result.append(line)
            continue
        if old is None:
            result.append(f"{line}{MARK}added #}}")
        else:
            result.append(f"{line}{MARK}was: {_escape(old)} #}}")
        out.changes.append(Change(n, old, line, why))
    out.template = "\n".join(result)
    return out


def _slurm_tasks(new: list, edit, after_directives: int) -> list[tuple[int, str, str]]:
    """One task per MPI rank, the CPUs the script asked for spread over them."""
    if any("num_mpi_ranks" in line and is_script_code(line) for line, _, _ in new):
        return []
    ntasks = next((i for i, (line, _, _) in enumerate(new) if _NTASKS.match(line)), None)
    cpt = next((i for i, (line, _, _) in enumerate(new) if _CPUS_PER_TASK.match(line)), None)
    n_expr = _expr(_NTASKS.match(new[ntasks][0]).group(1)) if ntasks is not None else "1"
    c_expr = _expr(_CPUS_PER_TASK.match(new[cpt][0]).group(1)) if cpt is not None else "1"
    total = n_expr if c_expr == "1" else c_expr if n_expr == "1" else f"{n_expr} * {c_expr}"
    why_tasks = "MPI jobs run one task per rank (num_mpi_ranks)"
    per_rank = f"#SBATCH --cpus-per-task={{{{ [{total} // num_mpi_ranks, 1] | max }}}}"
    why_cpus = f"the job's CPUs ({total.strip('()')}) shared among its ranks"
    added = []
    if ntasks is not None:
        edit(ntasks, "#SBATCH --ntasks={{ num_mpi_ranks }}", why_tasks)
    else:
        added.append((after_directives, "#SBATCH --ntasks={{ num_mpi_ranks }}", why_tasks))
    if total == "1":
        return added
    if cpt is not None:
        edit(cpt, per_rank, why_cpus)
    elif ntasks is not None:
        added.append((ntasks + 1, per_rank, why_cpus))
    else:
        added.append((after_directives, per_rank, why_cpus))
    return added


def to_cryosparc(template: str) -> tuple[str, list[str]]:
    """The CryoSPARC script a cryohpc template came from: marked lines restored, added
    ones dropped; and warnings for lines using what CryoSPARC does not provide."""
    lines, warnings = [], []
    for n, line in enumerate(template.split("\n"), start=1):
        m = _MARKED.search(line)
        if m:
            if m.group(1) != "added":
                lines.append(_unescape(m.group(2)))
            continue
        used = sorted({name for tag in _TAG.findall(line) for name in re.findall(r"[A-Za-z_]\w*", tag)}
                      & CRYOHPC_ONLY)
        if used:
            warnings.append(f"line {n}: {line.strip()!r} uses {', '.join(used)}, which CryoSPARC does not provide")
        lines.append(line)
    return "\n".join(lines), warnings
