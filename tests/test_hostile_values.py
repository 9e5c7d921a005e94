"""No value a user, a project or a site config sets runs as a command: values are one line
without control characters where they enter (API, CLI, YAML), and the renderer refuses any
other. Property-based: hypothesis generates the hostile strings."""

from __future__ import annotations

import math
import subprocess
import unicodedata
from pathlib import Path

import pytest
from conftest import cli, db_snapshot, wait_for
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cryohpc.api import Api
from cryohpc.errors import BuildError, ConfigError, UserError
from cryohpc.events import OutputEvent, OutputResultFile
from cryohpc.lanes import build_lane
from cryohpc.lanes.base import LaunchRequest, job_tag
from cryohpc.lanes.siteconfig import load_site_config
from cryohpc.model import Job, OutputGroup
from cryohpc.resources import Resources
from cryohpc.scheduler.job_events import apply_event
from cryohpc.status import JobStatus
from cryohpc.text import is_plain_path, line_problem, plain_file_name, shown, shown_lines
from cryohpc.values import parse_scalar

SHELL_BITS = ["\n", "\r", "\x00", "\x1b[2J", "\u2028", "\x85", "$(touch pwned)", "`touch pwned`", "; touch pwned",
              "' ; touch pwned ; '", '" ; touch pwned ; "', "#SBATCH --wrap=x", "\\", "&& touch pwned", "|", "*",
              "{{ 7*7 }}", "{% raw %}", "$HOME", "~", "-- ", "\t"]
hostile = st.lists(st.one_of(st.sampled_from(SHELL_BITS), st.text(max_size=6)), min_size=1, max_size=5).map("".join)


@given(st.text(max_size=40))
def test_line_check_matches_unicode_categories(text):
    bad = any(unicodedata.category(c) in ("Cc", "Zl", "Zp") or c in "\x85\u2028\u2029" for c in text)
    assert (line_problem(text) is not None) == bad
    assert (shown(text) == text) == (not bad)
    assert line_problem(shown(text)) is None  # what tables print is always one clean line


@given(st.lists(hostile | st.text(max_size=12), max_size=4).map("\n".join))
def test_shown_lines_keep_the_line_breaks_and_escape_everything_else(text):
    out = shown_lines(text)
    assert out.split("\n") == [shown(line) for line in text.split("\n")]
    assert all(line_problem(line) is None for line in out.split("\n"))


@given(hostile | st.text(max_size=30))
def test_plain_file_names_keep_length_and_plain_characters_and_change_only_the_rest(name):
    plain = plain_file_name(name)
    assert len(plain) == len(name) and is_plain_path(plain) == bool(name) and "/" not in plain
    assert plain_file_name(plain) == plain
    for before, after in zip(name, plain, strict=True):
        assert after == before or (after == "_" and (before == "/" or not is_plain_path(before)))
    assert line_problem(plain) is None and plain.split() == ([plain] if plain else [])


@given(st.floats(allow_nan=True, allow_infinity=True) | st.integers() | st.text(max_size=30))
def test_numbers_are_finite_and_64_bit_or_refused_with_the_reason(value):
    for kind in ("int", "float"):
        try:
            out = parse_scalar(kind, value)
        except ValueError as err:
            assert str(err)  # one readable reason
            continue
        assert (math.isfinite(out) if kind == "float" else -(2**63) <= out < 2**63)


PROBE = """#!/bin/bash
#SBATCH --job-name={{ job_name }}
#SBATCH --comment={{ job_title }}
# {{ job_creator }} {{ project_dir_abs }} {{ partition }} {{ account }} {{ queue }} {{ time_limit }}
#SBATCH --partition={{ partition }}
cd {{ job_dir_abs }} || exit 1
{{ run_cmd }}
echo $? > {{ exit_code_path }}
"""
TEMPLATES = {"slurm": "slurm.sh.j2", "pbs": "pbs.sh.j2", "sge": "sge.sh.j2", "probe": "probe.sh.j2"}
DIRECTIVE = {"slurm": "#SBATCH", "pbs": "#PBS", "sge": "#$", "probe": "#SBATCH"}


def lane(tmp: Path, kind: str, bin_path: str):
    (tmp / "templates").mkdir()
    (tmp / "templates" / "probe.sh.j2").write_text(PROBE)
    (tmp / "site").mkdir()
    (tmp / "site" / "lanes.yaml").write_text(
        f"lanes:\n  - name: {kind}\n    type: cluster\n    kind: {'slurm' if kind == 'probe' else kind}\n"
        f"    script_template: {TEMPLATES[kind]}\n    worker: {{bin_path: {bin_path}}}\n"
        "    custom_vars:\n      - {name: partition, type: str, default: ''}\n      - {name: account, type: str, default: ''}\n"
        "      - {name: queue, type: str, default: ''}\n      - {name: time_limit, type: str, default: ''}\n")
    return build_lane(load_site_config(tmp / "site" / "lanes.yaml")[0], "inst1")


RECORDER = '#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n'
SETTABLE = ["partition", "account", "queue", "time_limit", "title", "creator", "project_dir"]


def request(job_dir: Path, value: str, where: str, custom: dict) -> LaunchRequest:
    return LaunchRequest(project_uid="P1", job_uid="J1", job_type="t", job_creator=value if where == "creator" else "u",
                         job_title=value if where == "title" else "t", job_dir=job_dir, project_dir=job_dir.parent,
                         command=[], env={}, resources=Resources(cpus=2, mpi_ranks=1),
                         tag=job_tag("inst1", "P1", "J1"), custom=custom)


@pytest.mark.parametrize("kind", list(TEMPLATES))
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=hostile, where=st.sampled_from(SETTABLE))
def test_hostile_values_are_refused_or_inert_in_every_template(tmp_path_factory, kind, value, where):
    """Rendered with a hostile value in any variable a user or project can set, a script
    is either refused (the value is not one clean line) or, run by bash with the worker
    replaced by a recorder, has no extra line, no side effect, and starts the worker with
    exactly its own arguments."""
    if where == "project_dir":
        assume("/" not in value and "\x00" not in value and value not in ("", ".", ".."))
    tmp = tmp_path_factory.mktemp("render")
    recorder = tmp / "recorder"
    recorder.write_text(RECORDER)
    recorder.chmod(0o755)
    ln = lane(tmp, kind, str(recorder))
    job_dir = tmp / (f"P{value}" if where == "project_dir" else "P1") / "J1"
    job_dir.mkdir(parents=True)
    custom = {where: value} if where in ("partition", "account", "queue", "time_limit") else {}
    try:
        script, _ = ln.prepare(request(job_dir, value, where, ln.custom_values({}, custom)))
    except (BuildError, ConfigError) as err:
        assert line_problem(value) is not None or line_problem(str(job_dir)) is not None, f"refused: {err}"
        return
    assert line_problem(value) is None, "a value with a line break or control character was rendered"
    benign, _ = ln.prepare(request(tmp / "P1" / "J1", "x", "none", ln.custom_values({}, {})))
    grown = len(script.splitlines()) - len(benign.splitlines())
    assert 0 <= grown <= (1 if custom and value else 0)  # at most the value's own directive line
    new = [line for line in script.splitlines() if line not in benign.splitlines()]
    assert all(line.startswith((DIRECTIVE[kind], "# ", "cd ", "echo ", str(recorder), "stop_requested() { touch "))
               for line in new), new
    subprocess.run(["bash", "-c", script], cwd=tmp, env={"PATH": "/usr/bin:/bin", "RECORD": str(tmp / "argv")},
                   capture_output=True, text=True, timeout=30)
    assert (tmp / "argv").read_text().splitlines() == ["--job-dir", str(job_dir)]
    made = {str(p.relative_to(tmp)) for p in tmp.rglob("*")} - {"templates", "templates/probe.sh.j2", "site",
                                                                 "site/lanes.yaml", "recorder", "argv"}
    assert made == {str(job_dir.parent.relative_to(tmp)), str(job_dir.relative_to(tmp)),
                    str((job_dir / "exit_code").relative_to(tmp))}, made
    stop = [line for line in script.splitlines() if line.startswith("stop_requested() {")]
    if stop:  # the time-limit warning's handler, run as the trap would: it touches the one file
        subprocess.run(["bash", "-c", f"{stop[0]}\nstop_requested"], cwd=tmp, env={"PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30)
        after = {str(p.relative_to(tmp)) for p in tmp.rglob("*")} - {"templates", "templates/probe.sh.j2", "site",
                                                                      "site/lanes.yaml", "recorder", "argv"}
        assert after == made | {str((job_dir / "stop_request").relative_to(tmp))}, after


INJECTION = "gpu\ntouch /tmp/cryohpc-pwned #"


def test_cli_refuses_a_multi_line_custom_variable_and_changes_nothing(api, project, tmp_path):
    (api.instance.paths.site_configs / "slurm.yaml").write_text(
        "lanes:\n  - name: slurm\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
        "    custom_vars:\n      - {name: partition, type: str, default: debug}\n")
    job = project.create_job("test_sleep")
    before = db_snapshot(api)
    proc = cli(api.instance.home, "job", "queue", project.uid, job.uid, "--lane", "slurm", "--var",
               f"partition={INJECTION}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "custom variable 'partition' (job)" in proc.stderr and "line break (U+000A) at character 4" in proc.stderr
    assert db_snapshot(api) == before
    proc = cli(api.instance.home, "project", "set-vars", project.uid, f"partition={INJECTION}")
    assert proc.returncode == 2 and "custom variable 'partition' must be one line" in proc.stderr
    assert db_snapshot(api) == before


@settings(max_examples=60, deadline=None)
@given(hostile)
def test_titles_and_project_directories_are_one_line_where_they_enter(value):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        api = Api.init(Path(tmp) / "home", Path(tmp) / "projects")
        bad = line_problem(value) is not None
        try:
            project = api.create_project(value)
        except UserError as err:
            assert bad and "a project title must be one line" in str(err)
            project = api.create_project("fine")
        else:
            assert not bad
        try:
            project.create_job("test_sleep", title=value)
        except UserError as err:
            assert bad and "a job title must be one line" in str(err)
        else:
            assert not bad
        name = value.replace("/", "_").replace("\x00", "_")
        assume(name not in ("", ".", ".."))
        try:
            api.create_project("p", project_dir=Path(tmp) / "dirs" / name)
        except UserError as err:
            assert line_problem(name) is not None and "a project directory must be one line" in str(err)


def test_a_project_inside_another_is_refused(api, project):
    with pytest.raises(UserError, match=f"overlaps project {project.uid}"):
        api.create_project("nested", project_dir=project.dir / "sub")
    with pytest.raises(UserError, match=f"overlaps project {project.uid}"):
        api.create_project("around", project_dir=project.dir.parent)


def test_site_config_values_are_one_line(tmp_path):
    (tmp_path / "lanes.yaml").write_text(
        "lanes:\n  - name: s\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
        "    worker: {cache_path: \"/scratch/x\\n rm -rf ~\"}\n")
    with pytest.raises(ConfigError, match=r"lanes.yaml.*worker.*cache_path must be one line.*U\+000A"):
        load_site_config(tmp_path / "lanes.yaml")
    (tmp_path / "lanes.yaml").write_text("lanes:\n  - name: n\n    type: node\n    env: {A: \"x\\ty\"}\n")
    with pytest.raises(ConfigError, match=r"env\.A must be one line.*U\+0009"):
        load_site_config(tmp_path / "lanes.yaml")


@pytest.mark.parametrize("value, message", [("nan", "is not a finite number"), ("-inf", "is not a finite number"),
                                            ("1e400", "is not a finite number")])
def test_non_finite_float_params_are_refused_naming_the_param(project, value, message):
    with pytest.raises(BuildError, match=f"param 'psize_A': '{value}' {message}"):
        project.create_job("import_particles", params={"psize_A": value})


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["--poll-interval-s", "--heartbeat-interval-s", "--heartbeat-timeout-s"]),
       st.sampled_from(["0", "-1", "nan", "inf", "-inf", "1e400", "x", "0.25"]))
def test_instance_settings_are_refused_before_anything_is_made(option, value):
    """``init`` with a setting that is not a positive finite number says which and makes
    no folder (a half-made instance would be taken for a made one next time)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        proc = cli(home, "init", option, value)
        if value == "0.25":
            assert proc.returncode == 0 and (home / "config.yaml").is_file(), proc.stderr
            return
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert option[2:].replace("-", "_") in proc.stderr or f"'{value}' is not a valid float" in proc.stderr
        assert not home.exists()


def test_huge_ints_priorities_and_negative_seeds_are_refused(project):
    with pytest.raises(BuildError, match="'max_items': 100000000000000000000 is outside the 64-bit integer range"):
        project.create_job("subset_particles", params={"max_items": 10**20})
    with pytest.raises(BuildError, match="'seed': -1 is below the minimum 0"):
        project.create_job("simulate_particles", params={"seed": -1})
    job = project.create_job("test_sleep")
    with pytest.raises(BuildError, match="priority 10000000000 is outside"):
        job.queue(priority=10**10)
    assert job.status == JobStatus.BUILDING


def test_more_ranks_than_cpus_needs_a_lane_that_oversubscribes(api, project):
    (api.instance.paths.site_configs / "lanes.yaml").write_text(
        "lanes:\n  - {name: small, type: node, kind: local, cpus: 2, ram_gb: 4, gpus: []}\n"
        "  - {name: shared, type: node, kind: local, cpus: 2, ram_gb: 4, gpus: [], oversubscribe: true}\n")
    job = project.create_job("test_sleep", params={"ranks": 3})
    with pytest.raises(BuildError, match="asks 3 MPI ranks; no machine of lane 'small' has that many CPUs"):
        job.queue(lane="small")
    job.queue(lane="shared")
    assert job.status == JobStatus.QUEUED


@pytest.mark.parametrize("group, path, problem", [
    ("particles", "J1/J1_particles.cs", None),
    ("volumes", "J1/J1_v.cs", "output group 'volumes' is not one the job declares"),
    ("particles", "J2/stolen.cs", "outside the job's directory J1/"),
    ("particles", "J1/../J2/x.cs", "outside the job's directory J1/"),
    ("particles", "/etc/passwd", "outside the job's directory J1/"),
])
def test_worker_outputs_outside_the_job_are_refused(group, path, problem):
    job = Job(uid="J1", project_uid="P1", type="t", job_dir="J1", status=JobStatus.RUNNING,
              outputs=[OutputGroup(name="particles", type="particle")])
    apply_event(job, OutputEvent(group=group, num_items=1, results=[OutputResultFile(name="blob", path=path)]))
    if problem is None:
        assert len(job.run.pending_outputs) == 1 and not job.errors_run
    else:
        assert job.run.pending_outputs == [] and problem in job.errors_run[-1].message


def test_a_broken_site_config_costs_only_its_own_lanes(api, project, master):
    site = api.instance.paths.site_configs
    (site / "good.yaml").write_text("lanes:\n  - {name: good, type: node, kind: local, cpus: 2, ram_gb: 4, gpus: []}\n")
    (site / "latin1.yaml").write_bytes("lanes:\n  - {name: caf\xe9, type: node}\n".encode("latin-1"))
    (site / "zdup.yaml").write_text("lanes:\n  - {name: good, type: node, kind: local}\n")
    job = project.create_job("test_sleep", params={"seconds": 0.1})
    job.queue(lane="good")  # queueing to a sound lane still works
    assert job.wait(60) == JobStatus.COMPLETED
    with pytest.raises(UserError, match=r"no lane 'café'(.|\n)*latin1.yaml: not UTF-8 text \(byte 0xe9 at offset 21\)"):
        project.create_job("test_sleep").queue(lane="café")
    out = cli(api.instance.home, "lane", "list")
    assert out.returncode == 0 and "good" in out.stdout
    assert "latin1.yaml: not UTF-8" in out.stderr and "zdup.yaml: lane 'good' is already defined" in out.stderr
    (site / "latin1.yaml").unlink()
    bad = cli(api.instance.home, "lane", "validate")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "zdup.yaml: lane 'good' is already defined in" in bad.stderr


def test_tables_escape_control_characters_and_finished_jobs_show_no_queue_state(api, project, master):
    created = project.create_job("test_sleep", params={"seconds": 0.1})
    with api.store.write() as tx:  # a title from before titles were checked
        job = tx.get_job(project.uid, created.uid)
        job.title = "ok\x1b[2J\rgone"
        tx.put_job(job)
    handle = project.find_job(job.uid)
    handle.queue()
    assert handle.wait(60) == JobStatus.COMPLETED
    out = cli(api.instance.home, "job", "list", project.uid, check=True).stdout
    assert "\x1b" not in out and "\r" not in out and "ok\\x1b[2J\\rgone" in out
    row = next(line for line in out.splitlines() if line.startswith(job.uid))
    assert "actively_queued" not in row and "launched" not in row.split()[3:4]


def test_master_status_with_its_pid_file_deleted_says_so(api, master):
    from conftest import wait_for

    wait_for(lambda: api.instance.paths.master_pid.exists(), what="the master's pid file")
    api.instance.paths.master_pid.unlink()
    out = cli(api.instance.home, "master", "status")
    assert out.returncode == 0 and "its pid file" in out.stdout and "is missing" in out.stdout
    assert "pid -1" not in out.stdout


@pytest.mark.parametrize("kind", ["star", "cs"])
def test_an_empty_particle_file_is_one_clear_error(project, master, tmp_path, kind):
    if kind == "star":
        path = tmp_path / "empty.star"
        path.write_text("data_particles\n\nloop_\n_rlnImageName #1\n_rlnDefocusU #2\n_rlnDefocusV #3\n"
                        "_rlnDefocusAngle #4\n")
    else:
        from cryohpc.dataset import Dataset

        path = tmp_path / "empty.cs"
        Dataset.allocate(0, [("blob/path", "S20"), ("blob/idx", "u4"), ("blob/shape", "u4", (2,))]).save(path)
    job = project.create_job("import_particles", params={"particle_meta_path": str(path)})
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    message = job.model.errors_run[-1].message
    assert f"{path}: holds no particles" in message and "Error" not in message.split(":")[0], message


def test_a_star_value_that_is_not_a_number_names_file_column_and_row(project, master, tmp_path):
    from cryohpc.sampledata import write_sample_particles

    sample = write_sample_particles(tmp_path / "s", n=4, box=8, n_stacks=1)
    lines = sample.star.read_text().splitlines()
    header = [i for i, line in enumerate(lines) if line.startswith("_rlnDefocusU")][0]
    column = int(lines[header].split("#")[1]) - 1
    rows = [i for i, line in enumerate(lines) if line.strip() and not line.startswith(("_", "data_", "loop_", "#"))
            and "@" in line]
    fields = lines[rows[1]].split()
    fields[column] = "abc"
    lines[rows[1]] = " ".join(fields)
    sample.star.write_text("\n".join(lines) + "\n")
    job = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    assert f"{sample.star}: data_particles column rlnDefocusU row 2: 'abc' is not a finite number" in \
        job.model.errors_run[-1].message


def test_a_job_given_less_than_it_asked_says_so(api, project, master):
    (api.instance.paths.site_configs / "lanes.yaml").write_text(
        "lanes:\n  - {name: slim, type: node, kind: local, cpus: 1, ram_gb: 0.05, gpus: []}\n")
    job = project.create_job("test_sleep", params={"seconds": 3})
    job.queue(lane="slim")
    wait_for(lambda: job.status.active, 30, "the launch")
    assert job.model.run.reason == "runs with 0.05 of the 0.1 GB asked: all the lane has"
    job.kill()
