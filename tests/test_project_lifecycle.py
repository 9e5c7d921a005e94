"""A project's life beyond processing: archived (read-only, movable), detached from one
instance and attached to another where new jobs run on its outputs, and the database
compacted afterwards."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from conftest import ThreadMaster, cli, db_snapshot

from cryohpc.api import Api
from cryohpc.errors import ArchivedError, InputFileError, UserError
from cryohpc.status import JobStatus


def done(job, timeout=240):
    assert job.wait(timeout) == JobStatus.COMPLETED, [e.message for e in job.model.errors_run]
    return job


@pytest.fixture
def simulated(api, master):
    project = api.create_project("life")
    ws = project.create_workspace("main").uid
    sim = project.create_job("simulate_particles", ws, params={"n_particles": 200, "box": 24, "psize_A": 2.0,
                                                               "snr": 5.0, "seed": 2})
    rec = project.create_job("homo_reconstruct", ws, params={"checkpoint_every_s": 0})
    rec.connect("particles", sim.uid, "particles")
    sim.queue()
    rec.queue()
    done(rec)
    rec.mark_final()
    return project, ws, sim, rec


def test_archived_project_is_read_only_movable_and_comes_back(simulated, api, tmp_path):
    project, ws, sim, rec = simulated
    busy = project.create_job("test_sleep", params={"seconds": 30})
    busy.queue()
    with pytest.raises(UserError, match="while jobs are queued or running"):
        project.archive()
    busy.kill()
    project.archive()
    snapshot = db_snapshot(api)
    for attempt in (lambda: project.create_job("test_sleep"), lambda: sim.clear(), lambda: sim.tag(["x"]),
                    lambda: project.create_workspace("w")):
        with pytest.raises(ArchivedError, match=f"project {project.uid} is archived"):
            attempt()
    assert db_snapshot(api) == snapshot, "a refused change wrote something"
    assert len(rec.load_output("volume")) == 1  # results can still be read
    moved = tmp_path / "moved"
    shutil.move(str(project.dir), moved)
    with pytest.raises(UserError, match="no project marker there"):
        project.unarchive(tmp_path)
    project.unarchive(moved)
    assert project.dir == moved.resolve()
    again = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    again.connect("particles", sim.uid, "particles")
    again.queue()
    done(again)


def test_detach_attach_into_a_second_instance_and_run_a_job_there(simulated, api, tmp_path):
    project, ws, sim, rec = simulated
    rec.tag(["keep"])
    root = project.dir
    before = {j.uid: j for j in project.jobs()}
    meta = project.detach()
    assert meta == root / "cryohpc-project" / "metadata.json"
    assert [p.uid for p in api.projects()] == []
    with pytest.raises(UserError):
        api.find_project(project.uid)

    other = Api.init(tmp_path / "home2", tmp_path / "projects2")
    other.create_project("taken first")  # the attached project gets a new uid: P2
    attached = other.attach_project(root)
    assert attached.uid == "P2"
    after = {j.uid: j for j in attached.jobs()}
    assert set(after) == set(before)
    assert after[rec.uid].is_final_result and after[sim.uid].is_ancestor_of_final_result
    assert after[rec.uid].tags == ["keep"] and after[rec.uid].workspace_uids == [ws]
    assert [w.uid for w in attached.workspaces()] == [ws]
    marker = json.loads((root / "cryohpc-project.json").read_text())
    assert marker["project_uid"] == "P2" and marker["instance_uid"] == other.instance.config.instance_uid
    with pytest.raises(UserError, match="detach it there first"):
        api.attach_project(root)  # it belongs to the second instance now

    master2 = ThreadMaster(other).start()
    try:
        new = attached.create_job("homo_reconstruct", ws, params={"checkpoint_every_s": 0})
        assert int(new.uid[1:]) > max(int(u[1:]) for u in before)  # numbering goes on, no uid reused
        new.connect("particles", sim.uid, "particles")
        new.queue()
        done(new)
    finally:
        master2.stop()


def test_attach_refuses_damaged_metadata_with_the_file_named(simulated, api, tmp_path):
    project, *_ = simulated
    root = project.dir
    meta = project.detach()
    doc = json.loads(meta.read_text())
    doc["jobs"][0]["job_dir"] = "../../elsewhere"
    meta.write_text(json.dumps(doc))
    with pytest.raises(InputFileError, match=f"{meta}: job J1 names directory"):
        api.attach_project(root)
    for field, value, message in (("title", "x\nrm -rf /", "job J1 title holds a line break"),
                                  ("status", "running", "job J1 is recorded as running")):
        bad = json.loads(json.dumps(doc))
        bad["jobs"][0]["job_dir"] = "J1"
        bad["jobs"][0][field] = value
        meta.write_text(json.dumps(bad))
        with pytest.raises(InputFileError, match=message):
            api.attach_project(root)
    for outside in ("../../etc/passwd", "/etc/passwd", "J1/../../x.cs"):
        bad = json.loads(json.dumps(doc))
        bad["jobs"][0]["job_dir"] = "J1"
        bad["jobs"][0]["outputs"][0]["results"][0]["metafiles"][0] = outside
        meta.write_text(json.dumps(bad))
        with pytest.raises(InputFileError, match=f"job J1 names output file {re.escape(repr(outside))} outside"):
            api.attach_project(root)
    meta.write_text("{not json")
    with pytest.raises(InputFileError, match=str(meta)):
        api.attach_project(root)
    assert api.projects() == []


def test_db_compact_reports_sizes_and_keeps_everything(simulated, api, home):
    project, *_ = simulated
    for _ in range(30):
        project.create_job("test_sleep").delete()
    snapshot = db_snapshot(api)
    out = cli(home, "--json", "db", "compact", check=True)
    sizes = json.loads(out.stdout)
    assert sizes["bytes_after"] <= sizes["bytes_before"]
    assert db_snapshot(api) == snapshot
