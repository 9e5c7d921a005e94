"""Cluster lanes without a scheduler running: rendered scripts (golden files), quoting,
validation messages, and status parsing from real scheduler output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.errors import BuildError, ConfigError
from cryohpc.lanes import build_lane
from cryohpc.lanes.base import LaunchRequest, RunState, job_tag
from cryohpc.lanes.cluster import ClusterLane
from cryohpc.lanes.schedulers import KINDS, Phase, parse_submit_answer
from cryohpc.lanes.siteconfig import load_site_config
from cryohpc.model import Resources

DATA = Path(__file__).parent / "data"


def lane(tmp_path, kind: str, extra: str = "") -> ClusterLane:
    (tmp_path / "lanes.yaml").write_text(
        f"lanes:\n  - name: {kind}-lane\n    type: cluster\n    kind: {kind}\n    script_template: {kind}.sh.j2\n"
        "    worker: {bin_path: /opt/cryohpc/bin/cryohpc-worker, cache_path: $TMPDIR/cryohpc}\n"
        "    custom_vars:\n      - {name: queue, type: str, default: gpu}\n"
        "      - {name: partition, type: str, default: gpu}\n" + extra)
    return build_lane(load_site_config(tmp_path / "lanes.yaml")[0], "inst1")


def request(ln: ClusterLane, job_dir: Path, project_dir: Path, custom: dict, creator: str = "alice") -> LaunchRequest:
    """What the launcher hands a lane for job P3 J7 asking 8 CPUs, 4 GPUs, 4 ranks."""
    return LaunchRequest(project_uid="P3", job_uid="J7", job_type="homo_reconstruct", job_title="", job_creator=creator,
                         job_dir=job_dir, project_dir=project_dir, command=[], env={},
                         resources=Resources(cpus=8, gpus=4, ram_gb=30, mpi_ranks=4),
                         tag=job_tag("inst1", "P3", "J7"), custom=custom)


@pytest.mark.parametrize("kind", ["slurm", "pbs", "sge"])
def test_rendered_scripts_match_golden_files(tmp_path, kind):
    ln = lane(tmp_path, kind)
    script, _ = ln.prepare(request(ln, Path("/data/projects/P3/J7"), Path("/data/projects/P3"),
                                   ln.custom_values({}, {})))
    script = script.replace(os.path.dirname(sys.executable), "<python>")
    golden = DATA / "golden" / f"{kind}.sh"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(script)
    assert script == golden.read_text()
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0


def test_gpu_requests_per_scheduler(tmp_path):
    scripts = {}
    for kind in ("slurm", "pbs", "sge"):
        ln = lane(tmp_path, kind)
        scripts[kind], _ = ln.prepare(request(ln, Path("/p/J7"), Path("/p"), ln.custom_values({}, {})))
    assert "#SBATCH --gres=gpu:4" in scripts["slurm"] and "#SBATCH --ntasks=4" in scripts["slurm"]
    assert "#PBS -l nodes=1:ppn=8:gpus=4" in scripts["pbs"] and "PBS_GPUFILE" in scripts["pbs"]
    assert "#$ -l gpu=4" in scripts["sge"] and "SGE_HGR_gpu" in scripts["sge"]
    assert all("CRYOHPC_CACHE_PATH" not in s for s in scripts.values())  # job.json carries the cache path
    assert all("-n 4 /opt/cryohpc/bin/cryohpc-worker --job-dir /p/J7" in s for s in scripts.values())


def test_hostile_values_are_quoted_and_inert(tmp_path):
    ln = lane(tmp_path, "slurm")
    hostile = f"gpu; touch {tmp_path}/pwned"
    script, variables = ln.prepare(request(ln, tmp_path / "P3" / "J7", tmp_path / "P3",
                                           ln.custom_values({}, {"partition": hostile}), creator="$(touch pwned2)"))
    assert '#SBATCH --partition="gpu; touch' in script
    line = "echo " + ln.env.from_string("{{ partition }} {{ job_creator }}").render(**variables)
    out = subprocess.run(["bash", "-c", line], capture_output=True, text=True, cwd=tmp_path).stdout.strip()
    assert out == f"{hostile} $(touch pwned2)"
    assert not list(tmp_path.glob("pwned*"))


def test_undefined_variable_and_wrong_type_are_named(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "x.sh.j2").write_text("#!/bin/bash\n\necho {{ job_uid }}\necho {{ accountt }}\n")
    (tmp_path / "lanes.yaml").write_text(
        f"lanes:\n  - name: x\n    type: cluster\n    kind: slurm\n    script_template: {tmp_path}/t/x.sh.j2\n")
    with pytest.raises(ConfigError, match=r"x.sh.j2:4: 'accountt' is undefined"):
        build_lane(load_site_config(tmp_path / "lanes.yaml")[0])
    (tmp_path / "lanes.yaml").write_text(
        "lanes:\n  - name: x\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
        "    custom_vars:\n      - {name: nodes_max, type: int, default: many}\n")
    with pytest.raises(ConfigError, match=r"lanes.yaml:7: lanes\[0\]\.custom_vars\.0: .*'many' is not a valid int"):
        load_site_config(tmp_path / "lanes.yaml")
    (tmp_path / "lanes.yaml").write_text(
        "lanes:\n  - name: x\n    type: cluster\n    kind: lsf\n    script_template: slurm.sh.j2\n")
    with pytest.raises(ConfigError, match=r"lanes.yaml:4: lanes\[0\]\.kind"):
        load_site_config(tmp_path / "lanes.yaml")
    ln = lane(tmp_path, "slurm", "      - {name: qos, type: enum, choices: [low, high], required: true}\n")
    with pytest.raises(BuildError, match="'qos' is required"):
        ln.custom_values({}, {})
    with pytest.raises(BuildError, match="'urgent' is not one of low, high"):
        ln.custom_values({"qos": "urgent"}, {})
    assert ln.custom_values({"qos": "low"}, {"qos": "high"})["qos"] == "high"  # job wins


def test_slurm_status_from_real_squeue_output(tmp_path):
    ln = lane(tmp_path, "slurm")
    rows = {r.job_id: r for r in KINDS["slurm"].parse_status((DATA / "schedulers/slurm_squeue.txt").read_text())}
    assert rows["1"].code == "COMPLETED" and rows["2"].code == "CANCELLED"
    assert ln._judge(rows["2"], tmp_path / "none").state == RunState.EXITED
    assert "the scheduler ended the job: CANCELLED" in ln._judge(rows["2"], tmp_path / "none").detail
    for code in ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                 "NODE_FAIL", "PREEMPTED"):
        assert KINDS["slurm"].phase(code) is not None, code
    assert KINDS["slurm"].phase("TIMEOUT") == Phase.ENDED_BADLY
    odd = ln._judge(type(rows["1"])("9", "WEIRD_STATE"), tmp_path / "none")
    assert odd.state == RunState.UNKNOWN and "unknown slurm state code 'WEIRD_STATE'" in odd.detail
    pending = ln._judge(type(rows["1"])("9", "PENDING", "Resources"), tmp_path / "none")
    assert pending.state == RunState.PENDING and pending.scheduler_status == "PENDING (Resources)"


def test_pbs_status_from_real_torque_qstat_output(tmp_path):
    kind = KINDS["pbs"]
    queued = kind.parse_status((DATA / "schedulers/pbs_qstat_queued.txt").read_text())
    running = kind.parse_status((DATA / "schedulers/pbs_qstat_running.txt").read_text())
    done = kind.parse_status((DATA / "schedulers/pbs_qstat_done.txt").read_text())
    assert [(r.job_id, r.code) for r in queued] == [("1", "Q"), ("2", "Q")]
    assert [(r.job_id, r.code) for r in running] == [("1", "C"), ("2", "R")]
    assert {r.code for r in done} == {"C"}
    ln = lane(tmp_path, "pbs")
    # Torque shows a cancelled job as C too: without the exit-code sentinel nothing is assumed
    assert ln._judge(done[1], tmp_path / "none").exit_code is None
    (tmp_path / "exit_code").write_text("0\n")
    assert ln._judge(done[0], tmp_path).exit_code == 0
    assert kind.parse_submit("123.headnode\n") == "123.headnode"


def test_sge_status_from_real_qstat_output(tmp_path):
    """Captured from Son of Grid Engine 8.1.9 (Debian) run here: r, qw and hqw (user hold)."""
    kind = KINDS["sge"]
    rows = kind.parse_status((DATA / "schedulers/sge_qstat.txt").read_text())
    phases = {r.job_id: kind.phase(r.code) for r in rows}
    assert phases == {"1": Phase.RUNNING, "5": Phase.RUNNING, "6": Phase.RUNNING, "7": Phase.RUNNING,
                      "2": Phase.PENDING, "3": Phase.PENDING, "4": Phase.PENDING, "8": Phase.PENDING}
    assert kind.parse_submit((DATA / "schedulers/sge_qsub_terse.txt").read_text()) == "1"
    assert kind.phase("Eqw") == Phase.ENDED_BADLY  # error state: the job will not run without help
    ln = lane(tmp_path, "sge")
    gone = ln._judge(None, tmp_path / "none")  # SGE forgets finished jobs at once
    assert gone.state == RunState.UNKNOWN


def test_lane_cli_show_and_validate(tmp_path):
    from conftest import cli

    home = tmp_path / "home"
    cli(home, "init", check=True)
    (home / "site-configs" / "slurm.yaml").write_text(
        (Path(__file__).parents[1] / "site-configs" / "slurm-example.yaml").read_text())
    listing = cli(home, "lane", "list", check=True).stdout
    assert "slurm-gpu" in listing and "cluster/slurm" in listing and "local" in listing
    shown = cli(home, "lane", "show", "slurm-gpu", check=True).stdout
    assert "custom variable partition (str) = 'gpu'" in shown and "submit command: sbatch --parsable" in shown
    assert "1 lane(s)/worker(s) valid: slurm-gpu" in cli(home, "lane", "validate", check=True).stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("lanes:\n  - name: b\n    type: cluster\n    kind: slurm\n    script_template: nope.sh.j2\n")
    out = cli(home, "lane", "validate", str(bad))
    assert out.returncode == 2 and "template 'nope.sh.j2' not found" in out.stderr


@pytest.mark.parametrize("kind, says, exit_code, found", [
    ("sge", "Following jobs do not exist or permissions are not sufficient: \ncryohpc_inst1_P3_J7", 1, None),
    ("sge", "error: commlib error: got select error (Connection refused)", 1, "unknown"),
    ("slurm", "slurm_load_jobs error: Invalid job id specified", 1, None),
    ("slurm", "slurm_load_jobs error: Socket timed out on send/recv operation", 1, "unknown"),
    ("pbs", "qstat: Unknown Job Id 12.head", 153, None),
])
def test_no_such_job_is_an_answer_any_other_failure_is_unknown(tmp_path, kind, says, exit_code, found):
    """What a scheduler prints when it does not know the job means "none"; anything else
    that fails means "ask again later", so a lost submit is never repeated on a guess."""
    from cryohpc.lanes.errors import LaneUnreachable

    scheduler = tmp_path / "says"
    scheduler.write_text(f"#!/bin/sh\ncat >&2 <<'END'\n{says}\nEND\nexit {exit_code}\n")
    scheduler.chmod(0o755)
    ln = lane(tmp_path, kind, f"    find_cmd: {scheduler} {{{{ job_name }}}}\n")
    req = request(ln, tmp_path, tmp_path, ln.custom_values({}, {}))
    if found == "unknown":
        with pytest.raises(LaneUnreachable, match="could not tell whether an earlier submission went through"):
            ln.find(req)
    else:
        assert ln.find(req) is None


NOISE = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                max_size=60).filter(lambda line: not re.search(r"\d", line))  # banners, warnings: no ids


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 10**9), st.sampled_from([
    "Submitted batch job {id}", "Submitted batch job {id} on cluster c1", "{id}", "{id};c1",
    "{id}.head", "{id}.head.example.org", 'Your job {id} ("cryohpc_P1_J2") has been submitted',
    'Your job-array {id}.1-10:1 ("x y") has been submitted', "{id}.1-10:1",
]), st.lists(NOISE, max_size=3), st.lists(NOISE, max_size=2))
def test_every_submit_answer_form_gives_its_job_id(job_id, form, before, after):
    """SLURM plain and --parsable, PBS 123.server, SGE's sentence, -terse and arrays, with
    warnings or a wrapper's banner around them (lines without digits)."""
    answer = "\n".join([*before, form.format(id=job_id), *after])
    expected = form.format(id=job_id) if form.startswith("{id}.head") else str(job_id)
    for kind in KINDS.values():
        assert kind.parse_submit(answer) == expected


@given(st.lists(NOISE, max_size=4))
def test_an_answer_without_a_job_id_is_refused_naming_it(lines):
    with pytest.raises(ValueError, match="no job id"):
        parse_submit_answer("\n".join(lines))
