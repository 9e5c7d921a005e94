"""The worker side of a declared job type: check the program, export the inputs, run the
program under MPI with its output streamed into the job's log and progress, continue
from its last checkpoint when the job was resumed, and import its outputs as ``.cs``."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from ..compute.io_mrc import read_info
from ..compute.io_star import read_particle_star, write_star
from ..dataset import Dataset
from ..errors import ConfigError, InputFileError, UserError
from ..jobrun.context import RunContext
from ..jobrun.stopping import StopRequested
from ..text import is_plain_path
from .declared import ImportDecl, InputDecl, JobTypeDecl, VersionCheck
from .star_convert import alignments_from_star, particles_to_star

TAIL_LINES = 25


class ProgramError(UserError):
    """The external program is missing, of the wrong version, or failed."""


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def matches(folder: Path, pattern: str) -> list[Path]:
    """Files of ``folder`` matching the glob, in natural order (``it9`` before ``it10``)."""
    return sorted((p for p in folder.glob(pattern) if p.is_file()), key=_natural_key)


def latest_set(found: list[Path]) -> list[Path]:
    """The files sharing the last file's first number (``run_it025_class001.mrc``,
    ``run_it025_class002.mrc``...: every class of the latest iteration)."""
    def first_number(p: Path) -> str | None:
        m = re.search(r"\d+", p.name)
        return str(int(m.group(0))) if m else None

    last = first_number(found[-1])
    return [p for p in found if first_number(p) == last]


def find_program(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ProgramError(f"program {name!r} not found on PATH ({os.environ.get('PATH', '')}) on "
                           f"{os.uname().nodename}; install it there or put it on the worker's PATH")
    return found


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", text))


def check_version(check: VersionCheck, job_type: str) -> str:
    """The program's version, if it fits the declaration.

    Raises:
        ProgramError: naming the version found, the range wanted and where it was found.
    """
    argv = [find_program(check.command[0]), *check.command[1:]]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ProgramError(f"{job_type}: could not ask {argv[0]} its version: {err}") from None
    m = re.search(check.pattern, res.stdout + res.stderr)
    if m is None:
        raise ProgramError(f"{job_type}: {shlex.join(argv)} printed no version matching {check.pattern!r}")
    found = m.group(1)
    low = check.min and _version_tuple(found) < _version_tuple(check.min)
    high = check.below and _version_tuple(found) >= _version_tuple(check.below)
    if low or high:
        wanted = " and ".join(filter(None, (f">= {check.min}" if check.min else "",
                                            f"< {check.below}" if check.below else "")))
        raise ProgramError(f"{job_type} needs {argv[0]} {wanted} (its flags differ in other versions); "
                           f"found {found} on {os.uname().nodename}")
    return found


def program_path(ctx: RunContext, path: Path) -> str:
    """How the program is told of ``path``: absolute where that is plain text, else
    relative to the job directory it runs in, where the names are cryohpc's own. RELION
    takes a file name apart at ``#`` (a comment), ``:`` (a file type) and ``@`` (an image
    number), so a project under ``/data/run #2`` would otherwise fail in RELION."""
    name = str(path)
    if is_plain_path(name):
        return name
    rel = os.path.relpath(path, ctx.job_dir)
    return rel if is_plain_path(rel) else name


class Exporter:
    """Inputs as files the program reads, and the variables its template sees."""

    def __init__(self, ctx: RunContext, folder: Path):
        self.ctx, self.folder = ctx, folder
        self.names: dict[str, dict[str, int]] = {}  # input -> rlnImageName -> uid
        self.aliases: dict[Path, str] = {}

    def star_name(self, path: Path) -> str:
        """The name a STAR file gives RELION for a stack: :func:`program_path`'s if plain,
        else that of a link under ``exported/stacks/`` named plainly (a line break or a tab
        cannot even be written into a STAR file)."""
        name = program_path(self.ctx, path)
        if is_plain_path(name):
            return name
        if path not in self.aliases:
            links = self.folder / "stacks"
            links.mkdir(exist_ok=True)
            suffix = path.suffix if is_plain_path(path.suffix) else ".mrcs"
            link = links / f"{len(self.aliases) + 1:06d}{suffix}"
            link.unlink(missing_ok=True)  # a run before this one made it
            os.symlink(path, link)
            self.aliases[path] = str(link.relative_to(self.ctx.job_dir))
        return self.aliases[path]

    def close(self) -> None:
        """Remove the links :meth:`star_name` made: like the cache's copies they serve one
        run (a job export would otherwise copy the stacks they point to)."""
        shutil.rmtree(self.folder / "stacks", ignore_errors=True)
        self.aliases.clear()

    def export(self, decl: InputDecl, stack: Any) -> dict[str, Any]:
        ctx = self.ctx
        if not ctx.jobfile.inputs.get(decl.name):
            return {"connected": False}
        ds = ctx.load_input(decl.name, passthrough=True)
        info: dict[str, Any] = {"connected": True, "count": len(ds)}
        if decl.export == "star":
            blocks, names = particles_to_star(ds, lambda rel: self.star_name(stack(rel)))
            path = self.folder / f"{decl.name}.star"
            write_star(path, blocks)
            self.names[decl.name] = dict(zip(names, ds["uid"].tolist(), strict=True))
            info.update(star=program_path(ctx, path), has_ctf="ctf/df1_A" in ds, has_alignments3D="alignments3D/pose" in ds,
                        box=int(ds["blob/shape"][0, -1]), psize_A=float(ds["blob/psize_A"][0]))
        elif decl.export == "cs":
            path = self.folder / f"{decl.name}.cs"
            ds.save(path)
            info["cs"] = program_path(ctx, path)
        else:
            for prefix in ds.prefixes():
                if f"{prefix}/path" in ds:
                    info[prefix] = program_path(ctx, ctx.project_path(ds.strings(f"{prefix}/path")[0]))
                    if f"{prefix}/psize_A" in ds:
                        info[f"{prefix}_psize_A"] = float(ds[f"{prefix}/psize_A"][0])
                    if f"{prefix}/shape" in ds:
                        info[f"{prefix}_box"] = int(ds[f"{prefix}/shape"][0][-1])
        return info

    def uids_for(self, input_name: str, names: list[str]) -> np.ndarray:
        """The uids of exported rows, by the image names the program wrote back."""
        if input_name not in self.names:
            raise InputFileError(f"the program's particles come from input {input_name!r}, which is not connected")
        known = self.names[input_name]
        missing = [n for n in names if n not in known]
        if missing:
            raise InputFileError(f"the program wrote back {len(missing)} particle(s) it was not given, "
                                 f"e.g. {missing[0]!r}")
        return np.array([known[n] for n in names], dtype=np.uint64)


def _environment() -> jinja2.Environment:
    """Every printed value one word for ``shlex.split`` (single quotes: nothing inside is
    special), and one line without control characters (the renderer refuses others)."""
    from ..lanes.render import environment

    return environment([], quote=shlex.quote)


def _render(source: str, variables: dict[str, Any], where: str) -> list[str]:
    """The program's arguments: the template rendered, split into words."""
    from ..lanes.render import render

    return shlex.split(render(_environment(), where, variables, source=source))


def _truthy(expression: str, variables: dict[str, Any], where: str) -> bool:
    try:
        return bool(_environment().compile_expression(expression)(**variables))
    except Exception as err:  # an undefined name, a type error: the declaration's fault
        raise ConfigError(f"{where}: {expression!r}: {err}") from None


def _launcher(ctx: RunContext, exe: str, ranks: int) -> list[str]:
    """What starts ``ranks`` ranks of ``exe``: the lane's launcher if the site set one,
    else the ``mpiexec`` of the program's own MPI (beside it, else on PATH)."""
    if ranks <= 1:
        return []
    given = ctx.jobfile.program_launcher
    if given:
        return [*given, "-n", str(ranks)]
    beside = Path(exe).parent / "mpiexec"
    launcher = str(beside) if beside.exists() else shutil.which("mpiexec")
    if launcher is None:
        raise ProgramError(f"no mpiexec beside {exe} nor on PATH to start {ranks} ranks; set the lane's MPI launcher")
    return [launcher, "-n", str(ranks)]


def _stream(ctx: RunContext, argv: list[str], exe: str, decl: JobTypeDecl, env: dict[str, str], cwd: Path) -> None:
    """Run the program, its output into the job log; lines matching a progress pattern
    become progress and log events.

    A program that continues from its checkpoints (``continue`` declared) is stopped when
    the job is asked to stop (its time limit is near, or SIGTERM): it goes on from its last
    checkpoint in the next run.

    Raises:
        ProgramError: it exited with a failure (its last lines are in the message).
        StopRequested: it was stopped on request.
    """
    patterns = [(re.compile(p.pattern), p) for p in decl.progress]
    skip = re.compile("|".join(f"(?:{s})" for s in decl.log_skip)) if decl.log_skip else None
    tail: list[str] = []
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1)
    stopped = threading.Event()
    done = threading.Event()

    def watch() -> None:  # the program may print nothing for minutes: look for stops beside it
        while not done.wait(1.0):
            if ctx.stop_requested():
                stopped.set()
                proc.terminate()
                return

    if decl.continue_ is not None:
        threading.Thread(target=watch, daemon=True, name="stop-watch").start()
    try:
        for line in _lines(proc):
            if skip is not None and skip.search(line):
                continue
            sys.stdout.write(line + "\n")
            tail = (tail + [line])[-TAIL_LINES:]
            for rx, p in patterns:
                m = rx.search(line)
                if m:
                    _report(ctx, p, m.group(1))
        code = proc.wait()
    finally:
        done.set()
        if proc.poll() is None:  # killed: the program and its ranks go with the job
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    sys.stdout.flush()
    if stopped.is_set():
        raise StopRequested(f"{Path(exe).name} stopped; the next run continues from its last checkpoint")
    if code != 0:
        shown = "\n".join(tail[-10:])
        raise ProgramError(f"{decl.name}: {Path(exe).name} exited with status {code} (command in command.txt); "
                           f"its last lines:\n{shown}")


def _lines(proc: subprocess.Popen) -> Iterator[str]:
    assert proc.stdout is not None
    for raw in proc.stdout:
        yield raw.rstrip("\r\n")


def _report(ctx: RunContext, p: Any, value: str) -> None:
    ctx.log(f"{p.what}: {value}")
    if p.total_param and ctx.params.get(p.total_param):
        with contextlib.suppress(ValueError):
            ctx.progress(int(float(value)), int(ctx.params[p.total_param]), p.what)


def _volume_columns(ctx: RunContext, result: str, files: list[Path]) -> dict[str, Any]:
    infos = [read_info(f) for f in files]
    return {f"{result}/path": [ctx.relpath(f) for f in files],
            f"{result}/shape": np.array([i.shape[-3:] if len(i.shape) >= 3 else i.shape for i in infos], np.uint32),
            f"{result}/psize_A": np.array([i.psize_A for i in infos], np.float32)}


def _stack_columns(ctx: RunContext, files: list[Path]) -> dict[str, Any]:
    paths, idx, shapes, psize = [], [], [], []
    for f in files:
        info = read_info(f)
        n = info.shape[0] if len(info.shape) == 3 else 1
        paths += [ctx.relpath(f)] * n
        idx += list(range(n))
        shapes += [info.shape[-2:]] * n
        psize += [info.psize_A] * n
    return {"blob/path": paths, "blob/idx": np.array(idx, np.uint32), "blob/shape": np.array(shapes, np.uint32),
            "blob/psize_A": np.array(psize, np.float32), "blob/sign": np.ones(len(idx), np.float32)}


def _import_group(ctx: RunContext, imports: tuple[ImportDecl, ...], out: Path, exporter: Exporter,
                  group: str) -> Dataset:
    columns: dict[str, Any] = {}
    for imp in imports:
        pattern = imp.mrc or imp.star or ""
        found = matches(out, pattern)
        if not found:
            raise InputFileError(f"output {group!r}: the program wrote no {pattern} in {out}")
        files = latest_set(found) if imp.each else found[-1:]
        if imp.star is not None:
            table = read_particle_star(files[0])
            names = [str(n) for n in table.require("rlnImageName", purpose="matching rows to the input")[0]]
            columns["uid"] = exporter.uids_for(imp.input or "", names)
            psize = (table.number("rlnImagePixelSize") if table.has("rlnImagePixelSize")
                     else np.full(len(table), 1.0))
            columns.update(alignments_from_star(table, psize, dims=2 if imp.result == "alignments2D" else 3))
        elif imp.result == "blob":
            columns.update(_stack_columns(ctx, files))
        else:
            columns.update(_volume_columns(ctx, imp.result, files))
    return Dataset.from_columns(columns)


def _summary(decl_summary: dict, out: Path) -> dict[str, Any]:
    import starfile

    values: dict[str, Any] = {}
    for key, s in decl_summary.items():
        found = matches(out, s.star)
        if not found:
            continue
        try:
            block = starfile.read(found[-1], always_dict=True).get(s.block)
            value = block[s.column] if block is not None else None
            value = value.iloc[0] if hasattr(value, "iloc") else value
            values[key] = float(value) if isinstance(value, (int, float, np.number)) else str(value)
        except Exception as err:  # a summary value missing is worth a log line, not the job
            values[key] = f"unreadable ({type(err).__name__})"
    return values


def run_external(ctx: RunContext) -> None:
    decl = JobTypeDecl.model_validate(ctx.spec.declared)
    name = decl.name
    res = ctx.jobfile.resources
    ranks = res.mpi_ranks
    program = decl.program
    if ranks > 1 and not program.mpi_executable:
        raise ProgramError(f"{name}: {program.executable} is not an MPI program; run it with 1 rank")
    if ranks > 1 and ranks < program.min_mpi_ranks:
        raise ProgramError(f"{name}: {program.mpi_executable} needs at least {program.min_mpi_ranks} MPI ranks "
                           f"(or 1, for {program.executable}); this job has {ranks}")
    exe = find_program(program.mpi_executable if ranks > 1 else program.executable)
    version = check_version(program.version, name) if program.version else "not checked"
    ctx.log(f"{name}: {exe} (version {version}), {ranks} rank(s) on {os.uname().nodename}")

    out = ctx.job_dir / decl.output_dir
    out.mkdir(exist_ok=True)
    exported = ctx.job_dir / "exported"
    exported.mkdir(exist_ok=True)
    exporter = Exporter(ctx, exported)
    star_inputs = [i for i in decl.inputs if i.export == "star" and ctx.jobfile.inputs.get(i.name)]
    stacks = sorted({p for i in star_inputs for p in ctx.load_input(i.name, passthrough=True).strings("blob/path")})
    with ctx.cached([ctx.project_path(p) for p in stacks]) as mapping, contextlib.closing(exporter):
        def stack(rel: str) -> Path:
            return mapping.get(ctx.project_path(rel).resolve(), ctx.project_path(rel).resolve())

        inputs = {i.name: exporter.export(i, stack) for i in decl.inputs}
        threads = max(1, res.cpus // max(ranks, 1))
        variables = {**ctx.params, "params": ctx.params, "inputs": inputs, "out": program_path(ctx, out),
                     "ranks": ranks, "threads": threads, "gpus": res.gpus, "job_dir": program_path(ctx, ctx.job_dir)}
        checkpoint = None
        if decl.continue_ is not None:
            found = matches(out, decl.continue_.checkpoint)
            checkpoint = found[-1] if found else None
        if checkpoint is not None:
            ctx.log(f"continuing from {checkpoint.relative_to(ctx.job_dir)}")
            args = _render(decl.continue_.args, {**variables, "checkpoint": program_path(ctx, checkpoint)}, f"{name} continue.args")
        else:
            args = _render(decl.args, variables, f"{name} args")
        argv = [*_launcher(ctx, exe, ranks), exe, *args]
        env = {**os.environ, **program.env, "OMP_NUM_THREADS": str(threads)}
        if ctx.jobfile.oversubscribe:
            env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"  # Open MPI; other MPIs ignore it
        commands = []
        for i, step in enumerate(decl.before):
            if step.when and not _truthy(step.when, variables, f"{name} before[{i}].when"):
                continue
            step_exe = find_program(step.executable)
            commands.append(([step_exe, *_render(step.args, variables, f"{name} before[{i}].args")], step_exe))
        commands.append((argv, exe))
        (ctx.job_dir / "command.txt").write_text("".join(shlex.join(c) + "\n" for c, _ in commands))
        for command, command_exe in commands:
            ctx.log(f"running: {shlex.join(command)}")
            _stream(ctx, command, command_exe, decl, env, ctx.job_dir)

    for group in decl.outputs:
        ds = _import_group(ctx, group.imports, out, exporter, group.name) if group.imports else None
        if ds is None:
            continue
        ctx.save_output(group.name, ds, summary=_summary(group.summary, out))
        ctx.log(f"output {group.name}: {len(ds)} item(s) ({', '.join(ds.prefixes())})")
