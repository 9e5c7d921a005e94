"""The real ``cryohpc`` command: end to end, bad input, concurrent processes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAST, cli, db_snapshot
from cryosparc.dataset import Dataset as CsDataset

from cryohpc.api import Api
from cryohpc.dataset import Dataset
from cryohpc.sampledata import write_sample_particles
from cryohpc.status import JobStatus


@pytest.fixture
def inst(tmp_path):
    home = tmp_path / "home"
    cli(home, "init", "--projects-root", str(tmp_path / "projects"),
        "--poll-interval-s", str(FAST["poll_interval_s"]), "--heartbeat-interval-s", "0.5", check=True)
    cli(home, "project", "create", "--title", "cli", check=True)
    yield home
    cli(home, "master", "stop")


def test_import_queue_wait_and_read_with_cryosparc_tools(inst, tmp_path):
    s = write_sample_particles(tmp_path / "data", n=30, box=16)
    out = cli(inst, "--json", "job", "create", "P1", "import_particles", "-p", f"particle_meta_path={s.star}", check=True)
    assert json.loads(out.stdout)["uid"] == "J1"
    cli(inst, "job", "queue", "P1", "J1", "--lane", "local", "--priority", "2", check=True)
    started = cli(inst, "master", "start", check=True)
    assert "master running" in started.stdout
    assert cli(inst, "master", "start").returncode == 2  # one master per instance
    done = cli(inst, "job", "wait", "P1", "J1", "--timeout-s", "60")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "P1 J1 completed" in done.stdout
    log = cli(inst, "job", "log", "P1", "J1", check=True).stdout
    assert "30 particles" in log and "completed" in log
    shown = json.loads(cli(inst, "--json", "job", "show", "P1", "J1", check=True).stdout)
    path = tmp_path / "projects" / "P1" / shown["outputs"][0]["results"][0]["metafiles"][0]
    theirs = CsDataset.load(path)
    assert len(theirs) == 30
    assert np.allclose(theirs["ctf/df1_A"], s.defocus_u_A)
    assert list(theirs["blob/path"])[0].startswith("J1/imported/")
    table = cli(inst, "dataset", "show", str(path), "--rows", "1", check=True).stdout
    assert "30 items" in table and "ctf/df1_A" in table
    listing = cli(inst, "job", "list", "P1", check=True).stdout
    assert "J1" in listing and "completed" in listing


def test_master_restart_from_the_cli_mid_run(inst):
    cli(inst, "job", "create", "P1", "test_sleep", "-p", "seconds=3", check=True)
    cli(inst, "job", "queue", "P1", "J1", check=True)
    cli(inst, "master", "start", check=True)
    api = Api(inst)
    job = api.find_project("P1").find_job("J1")
    from conftest import wait_for

    wait_for(lambda: job.status.value == "running", what="running")
    assert "stopped" in cli(inst, "master", "stop", check=True).stdout
    assert cli(inst, "master", "status").returncode == 1
    cli(inst, "master", "start", check=True)
    assert cli(inst, "job", "wait", "P1", "J1", "--timeout-s", "60").returncode == 0


@pytest.mark.parametrize("args, message", [
    (["job", "show", "P1", "J99"], "error: no job J99 in project P1"),
    (["job", "queue", "P7", "J1"], "error: no project P7"),
    (["job", "create", "P1", "no_such_type"], "error: unknown job type 'no_such_type'"),
    (["job", "create", "P1", "import_particles", "-p", "psize_A=big"], "'psize_A': 'big' is not a valid float"),
    (["job", "connect", "P1", "J1", "particles", "J1"], "is not of the form J1.group"),
])
def test_bad_requests_give_one_message_and_change_nothing(inst, args, message):
    api = Api(inst)
    before = db_snapshot(api)
    proc = cli(inst, *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert db_snapshot(api) == before


def test_connecting_a_volume_to_a_particle_input(inst, tmp_path):
    from cryohpc.sampledata import write_sample_volume

    vol = tmp_path / "v.mrc"
    write_sample_volume(vol, box=8)
    cli(inst, "job", "create", "P1", "import_volume", "-p", f"volume_path={vol}", check=True)
    cli(inst, "job", "create", "P1", "subset_particles", check=True)
    api = Api(inst)
    before = db_snapshot(api)
    proc = cli(inst, "job", "connect", "P1", "J2", "particles", "J1.imported_volume_1")
    assert proc.returncode == 2
    assert "the output holds volume items, the input takes particle" in proc.stderr
    assert db_snapshot(api) == before


def test_corrupt_cs_file(inst, tmp_path):
    bad = tmp_path / "bad.cs"
    bad.write_bytes(b"\x95CSDAT\xff\x00\x00\x00{")
    proc = cli(inst, "dataset", "show", str(bad))
    assert proc.returncode == 2 and f"error: {bad}: truncated CSDAT file" in proc.stderr


def test_dataset_show_needs_no_instance_and_prints_any_bytes_escaped(tmp_path):
    """Looking at a file is not refused for what its strings hold: bytes that are not
    UTF-8 and control characters come out escaped, one line per field."""
    path = tmp_path / "odd.cs"
    Dataset.from_columns({"blob/path": np.array([b"\xff\xfe", b"a\x1b[2Jb", b"x\ny"]),
                          "blob/idx": np.arange(3, dtype=np.uint32)}).save(path, csdat=True)
    proc = cli(tmp_path / "no-instance", "dataset", "show", str(path))
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith("blob/path"))
    assert row.split()[-3:] == ["\\xff\\xfe", "a\\x1b[2Jb", "x\\ny"]
    assert "\x1b" not in proc.stdout and len(proc.stdout.splitlines()) == 5
    shown = json.loads(cli(tmp_path / "no-instance", "--json", "dataset", "show", str(path), check=True).stdout)
    assert [r["blob/path"] for r in shown["rows"]] == ["\\xff\\xfe", "a\x1b[2Jb", "x\ny"]


def test_job_show_keeps_a_programs_line_breaks_and_escapes_its_terminal_codes(inst):
    """A failed program's last lines and a scheduler's reason reach ``job show``: their
    line breaks stay, and escape sequences cannot clear or rewrite the user's terminal."""
    cli(inst, "job", "create", "P1", "test_sleep", check=True)
    api = Api(inst)
    with api.store.write() as tx:
        job = tx.get_job("P1", "J1")
        job.status = JobStatus.FAILED
        job.add_run_error("relion_refine exited 1:\n\x1b[2J\x1b[Hfake prompt$ \rsecond line\x07")
        job.run.cluster_status, job.run.reason = "PD\x1b]0;title\x07", "Resources\x1b[31m"
        tx.put_job(job)
    out = cli(inst, "job", "show", "P1", "J1", check=True).stdout
    assert not any(ch in out for ch in "\x1b\x07\r")
    assert "error: relion_refine exited 1:\n\\x1b[2J\\x1b[Hfake prompt$ \\rsecond line\\x07\n" in out


def test_star_missing_columns_fails_the_job_with_its_name(inst, tmp_path):
    s = write_sample_particles(tmp_path / "data", n=6, box=8)
    text = s.star.read_text().replace("_rlnDefocusU", "_rlnSomethingElse")
    s.star.write_text(text)
    cli(inst, "job", "create", "P1", "import_particles", "-p", f"particle_meta_path={s.star}", check=True)
    cli(inst, "job", "queue", "P1", "J1", check=True)
    cli(inst, "master", "start", check=True)
    proc = cli(inst, "job", "wait", "P1", "J1", "--timeout-s", "60")
    assert proc.returncode == 1
    assert "failed" in proc.stdout and "lacks column(s) rlnDefocusU" in proc.stdout and str(s.star) in proc.stdout


def test_two_cli_processes_queueing_at_once_lose_nothing(inst):
    n = 12
    creators = [subprocess.Popen([sys.executable, "-m", "cryohpc.cli", "--home", str(inst), "job", "create",
                                  "P1", "test_sleep"], stdout=subprocess.PIPE, text=True) for _ in range(n)]
    uids = sorted(p.communicate(timeout=120)[0].split()[1] for p in creators)
    assert sorted(uids, key=lambda u: int(u[1:])) == [f"J{i}" for i in range(1, n + 1)]
    script = (
        "import sys; from cryohpc.cli import main; "
        "sys.exit(max(main(['--home', sys.argv[1], 'job', 'queue', 'P1', u]) for u in sys.argv[2:]))"
    )
    halves = [[f"J{i}" for i in range(1, n + 1, 2)], [f"J{i}" for i in range(2, n + 1, 2)]]
    procs = [subprocess.Popen([sys.executable, "-c", script, str(inst), *h]) for h in halves]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    jobs = json.loads(cli(inst, "--json", "job", "list", "P1", check=True).stdout)
    assert sorted(j["status"] for j in jobs) == ["queued"] * n


def test_jobtypes_views(inst):
    listing = cli(inst, "jobtypes", "list", check=True).stdout
    assert "import_particles" in listing and "subset_particles" in listing
    shown = cli(inst, "jobtypes", "show", "subset_particles", check=True).stdout
    assert "input particles (particle, 1..any groups)" in shown
    assert "slot blob" in shown and "passes through particles" in shown
    assert "max_items (int, default None)" in shown
    lanes = cli(inst, "lane", "list", check=True).stdout
    assert "local" in lanes


def test_workspaces_and_following_a_log(inst, tmp_path):
    cli(inst, "workspace", "create", "P1", "--title", "first pass", check=True)
    ws = json.loads(cli(inst, "--json", "workspace", "list", "P1", check=True).stdout)
    assert [w["uid"] for w in ws] == ["W1"] and ws[0]["title"] == "first pass"
    assert cli(inst, "workspace", "list", "P9").returncode == 2
    cli(inst, "job", "create", "P1", "test_sleep", "-w", "W1", "-p", "seconds=1", check=True)
    assert json.loads(cli(inst, "--json", "job", "show", "P1", "J1", check=True).stdout)["workspace_uids"] == ["W1"]
    assert cli(inst, "job", "create", "P1", "test_sleep", "-w", "W7").returncode == 2
    cli(inst, "job", "queue", "P1", "J1", check=True)
    cli(inst, "master", "start", check=True)
    followed = cli(inst, "job", "log", "P1", "J1", "--follow", timeout=60)
    assert followed.returncode == 0
    lines = followed.stdout.splitlines()
    assert "worker started" in lines[0] and lines[-1].endswith("completed") and any("slept" in ln for ln in lines)
