"""Every job action of CryoSPARC's guide, its allowed and refused cases, on the real
master and worker (local lane); selections, plans and the operation journal."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import cli, db_snapshot

from cryohpc.actions import restart_lock
from cryohpc.api import Selection
from cryohpc.dataset import Dataset
from cryohpc.errors import BuildError, InputFileError, NotFoundError, UserError
from cryohpc.status import JobStatus


def run(job, status=JobStatus.COMPLETED, timeout=60):
    assert job.wait(timeout) == status, job.model.errors_run
    return job


def iterate(project, **params):
    job = project.create_job("test_iterate", params=params)
    job.queue()
    return job


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_status(job, status, timeout=60):
    deadline = time.monotonic() + timeout
    while job.status != status:
        assert time.monotonic() < deadline, f"{job} still {job.status}"
        time.sleep(0.05)


# -- queue --------------------------------------------------------------------------------
def test_import_jobs_go_to_the_default_lane_with_a_note(api, project, sample):
    (api.instance.paths.site_configs / "more.yaml").write_text(
        "lanes:\n  - {name: big, type: node, kind: local, cpus: 2, ram_gb: 4, gpus: []}\n")
    imp = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    j = imp.queue(lane="big")
    assert j.queued_lane == "local" and "runs on the master's machine" in j.run.reason and "'big'" in j.run.reason
    other = project.create_job("test_sleep")
    assert other.queue(lane="big").queued_lane == "big"
    out = cli(api.instance.home, "job", "queue", project.uid, imp.uid, "--lane", "big")
    assert out.returncode == 2 and "only building jobs can be queued" in out.stderr
    assert j.queued_by is not None and imp.model.status == JobStatus.QUEUED


# -- kill, clear ------------------------------------------------------------------------------
def test_kill_and_clear_rules_by_status(api, project, master):
    job = project.create_job("test_sleep", params={"seconds": 60})
    with pytest.raises(UserError, match="only queued or running jobs can be killed"):
        job.kill()
    with pytest.raises(UserError, match="is building; it has nothing to clear"):
        job.clear()
    job.queue()
    wait_status(job, JobStatus.RUNNING)
    with pytest.raises(UserError, match="is running; kill it first"):
        job.clear()
    job.kill()
    assert (job.dir / "job.json").exists()  # a killed job keeps its files until cleared
    job.clear()
    assert job.status == JobStatus.BUILDING and not any(job.dir.iterdir())


def test_clear_takes_a_queued_job_off_the_queue(api, project):
    job = project.create_job("test_sleep")
    job.queue()  # no master: it stays queued
    j = job.clear()
    assert j.status == JobStatus.BUILDING and j.queue_status is None and j.queued_lane is None


def test_a_parent_with_a_running_child_cannot_be_cleared_or_deleted(api, project, master):
    parent = run(iterate(project, iterations=1))
    child = project.create_job("test_iterate", params={"sleep_s": 30, "iterations": 2})
    with api.store.write() as tx:  # test_iterate takes no inputs: the graph is set directly
        p, c = tx.get_job(project.uid, parent.uid), tx.get_job(project.uid, child.uid)
        p.children, c.parents = [child.uid], [parent.uid]
        tx.put_job(p)
        tx.put_job(c)
    child.queue()
    wait_status(child, JobStatus.RUNNING)
    for act in (parent.clear, parent.delete, parent.restart):
        with pytest.raises(UserError, match=f"child {child.uid} is running; kill it first"):
            act()
    child.kill()
    parent.delete()


# -- restart, resume ----------------------------------------------------------------------------
def test_restart_clears_and_requeues_a_completed_job_with_its_params(api, project, master):
    job = run(iterate(project, iterations=2, n=7))
    first = job.model
    (job.dir / "stray.txt").write_text("from the first run")
    job.restart()
    run(job)
    again = job.model
    assert again.completed_count == 2 and again.params == first.params and again.queued_lane == "local"
    assert not (job.dir / "stray.txt").exists()  # cleared before it ran again
    assert again.output("particles").num_items == 7


def test_restart_kills_a_running_job_first_and_one_restart_runs_at_a_time(api, project, master):
    job = project.create_job("test_sleep", params={"seconds": 60})
    job.queue()
    wait_status(job, JobStatus.RUNNING)
    pid = int((job.dir / "pid.rank0").read_text())
    with restart_lock(api.instance):
        with pytest.raises(UserError, match="another restart operation is running"):
            job.restart()
        out = cli(api.instance.home, "job", "restart", project.uid, job.uid)
        assert out.returncode == 2 and "only one runs at a time" in out.stderr
    assert job.status == JobStatus.RUNNING
    job.restart()
    wait_status(job, JobStatus.RUNNING)
    assert int((job.dir / "pid.rank0").read_text()) != pid
    deadline = time.monotonic() + 10
    while alive(pid):
        assert time.monotonic() < deadline, f"the first run's worker {pid} still runs"
        time.sleep(0.05)
    job.kill()
    with pytest.raises(UserError, match="is building; queue it instead"):
        project.create_job("test_sleep").restart()


def test_resume_keeps_files_and_refuses_what_is_not_killed_or_failed(api, project, master):
    job = run(iterate(project, iterations=2, fail_at=1), JobStatus.FAILED)
    (job.dir / "kept.txt").write_text("x")
    job.resume()
    assert (job.dir / "kept.txt").exists()
    run(job, JobStatus.FAILED)
    with pytest.raises(UserError, match="only killed or failed jobs can be resumed"):
        run(iterate(project, iterations=1)).resume()


# -- clear intermediate results, mark complete ------------------------------------------------
def test_clear_intermediate_keeps_final_and_used_versions(api, project, master):
    project.set_intermediate_on_complete(False)  # kept on completion, to be cleared by hand here
    job = run(iterate(project, iterations=4))
    files = job.model.output("particles").result("blob").metafiles
    assert len(files) == 4 and (job.dir / "checkpoints").is_dir()
    user = project.create_job("subset_particles", params={"max_items": 2})
    user.connect("particles", job.uid, "particles")
    user.connect_slot("particles", "blob", job.uid, "particles", "blob", version=1)
    job.clear_intermediate()
    root = project.dir
    assert [(root / f).exists() for f in files] == [False, True, False, True]
    assert not (job.dir / "checkpoints").exists()
    assert job.model.output("particles").result("blob").cleared_versions == [0, 2]
    with pytest.raises(BuildError, match="version 0 was removed as an intermediate result"):
        user.connect_slot("particles", "blob", job.uid, "particles", "blob", version=0)
    with pytest.raises(UserError, match="has no intermediate results"):
        job.clear_intermediate()
    failed = run(iterate(project, iterations=3, fail_at=2), JobStatus.FAILED)
    with pytest.raises(UserError, match="a killed or failed job keeps its checkpoints"):
        failed.clear_intermediate()
    plan = project.plan("clear-intermediate", Selection(every=True))
    assert [i.will for i in plan.items if i.job_uid == failed.uid] == [False]


def test_mark_complete_makes_a_failed_jobs_latest_outputs_usable(api, project, master):
    job = run(iterate(project, iterations=3, fail_at=2, n=4), JobStatus.FAILED)
    assert job.model.output("particles").num_items == 0
    child = project.create_job("subset_particles", params={"max_items": 2})
    child.connect("particles", job.uid, "particles")
    with pytest.raises(UserError, match="only killed or failed jobs can be marked complete"):
        run(iterate(project, iterations=1)).mark_complete()
    j = job.mark_complete()
    assert j.status == JobStatus.COMPLETED and j.completed_count == 1 and "marked complete" in j.run.reason
    blob = j.output("particles").result("blob")
    assert len(blob.metafiles) == 2 and blob.metafiles[-1].endswith("_v1.cs")
    child.queue()
    run(child)
    assert child.load_output("particles")["blob/idx"].tolist() == [1, 2]  # from iteration 2 (idx + 1)


# -- clone, clone chain --------------------------------------------------------------------------
def test_clone_keeps_type_params_and_inputs_into_this_another_or_a_new_workspace(api, project):
    w1, w2 = project.create_workspace("one"), project.create_workspace("two")
    src = project.create_job("test_iterate", workspace=w1.uid, params={"iterations": 2})
    user = project.create_job("subset_particles", workspace=w1.uid, params={"max_items": 3})
    user.connect("particles", src.uid, "particles")
    user.tag(add=["keep"])
    c1 = user.clone()
    m = c1.model
    assert (m.type, m.params, m.cloned_from, m.status) == ("subset_particles", {"max_items": 3}, user.uid,
                                                           JobStatus.BUILDING)
    assert m.inputs == user.model.inputs and m.workspace_uids == [w1.uid] and m.uid != user.uid
    assert c1.uid in src.model.children
    assert user.clone(w2.uid).model.workspace_uids == [w2.uid]
    out = cli(api.instance.home, "--json", "job", "clone", project.uid, user.uid, src.uid, "--new-workspace", "copies",
              "--yes", check=True)
    assert '"outcome": "done"' in out.stdout
    new_ws = project.workspaces()[-1]
    assert new_ws.title == "copies" and len(project.job_uids(new_ws.uid)) == 2
    with pytest.raises(NotFoundError):
        user.clone("W99")


def three_in_a_row(project):
    """a -> b -> c, built (not run)."""
    a = project.create_job("test_iterate")
    b = project.create_job("subset_particles", params={"max_items": 2})
    b.connect("particles", a.uid, "particles")
    c = project.create_job("subset_particles", params={"max_items": 1})
    c.connect("particles", b.uid, "particles")
    return a, b, c


def test_clone_chain_rewires_and_refuses_unrelated_jobs(api, project):
    a, b, c = three_in_a_row(project)
    side = project.create_job("subset_particles", params={"max_items": 1})
    side.connect("particles", a.uid, "particles")
    lone = project.create_job("test_iterate")
    clones = project.clone_chain(a.uid, c.uid)
    assert [h.model.cloned_from for h in clones] == [a.uid, b.uid, c.uid]  # not the side branch
    ca, cb, cc = (h.model for h in clones)
    assert cb.inputs["particles"][0].job_uid == ca.uid and cc.inputs["particles"][0].job_uid == cb.uid
    assert project.clone_chain(c.uid, a.uid)[0].model.cloned_from == a.uid  # either order
    before = db_snapshot(api)
    with pytest.raises(UserError, match="are not on one chain"):
        project.clone_chain(a.uid, lone.uid)
    with pytest.raises(UserError, match="are not on one chain"):
        project.clone_chain(side.uid, c.uid)
    assert db_snapshot(api) == before


# -- link, unlink, move, delete -------------------------------------------------------------------
def test_link_unlink_move_and_the_workspace_lists(api, project):
    w1, w2, w3 = (project.create_workspace(t).uid for t in ("a", "b", "c"))
    job = project.create_job("test_sleep", workspace=w1)
    job.link(w2)
    assert project.job_uids(w1) == project.job_uids(w2) == [job.uid]
    with pytest.raises(UserError, match="already in workspace"):
        job.link(w2)
    with pytest.raises(UserError, match="say which to move it from"):
        job.move(w3)
    job.move(w3, from_workspace=w2)
    assert job.model.workspace_uids == [w1, w3] and project.job_uids(w2) == []
    job.unlink(w1)
    with pytest.raises(UserError, match="is its last workspace; move it to another instead"):
        job.unlink(w3)
    job.delete()
    assert project.job_uids(w3) == [] and project.job_uids() == []


def test_delete_removes_files_never_reuses_uids_and_children_show_the_deleted_parent(api, project, master):
    parent = run(iterate(project, iterations=1))
    child = project.create_job("subset_particles", params={"max_items": 2})
    child.connect("particles", parent.uid, "particles")
    child.queue()
    run(child)
    folder = parent.dir
    parent.delete()
    assert not folder.exists()
    with pytest.raises(NotFoundError):
        _ = parent.model
    gone = project.create_job("test_sleep")
    assert int(gone.uid[1:]) > int(child.uid[1:])
    shown = cli(api.instance.home, "job", "show", project.uid, child.uid, check=True).stdout
    assert f"{parent.uid}.particles ({parent.uid} deleted)" in shown
    assert child.load_output("particles")["blob/idx"].tolist() == [0, 1]  # its own results still read
    again = cli(api.instance.home, "job", "delete", project.uid, parent.uid)
    assert again.returncode == 2 and "no job" in again.stderr
    plan = project.plan("delete", Selection(uids=[parent.uid]))
    assert plan.items[0].what == "skipped: already deleted"


# -- tags, description -----------------------------------------------------------------------------
def test_tags_and_descriptions(api, project):
    job = project.create_job("test_sleep")
    job.tag(add=["good", "run1"])
    assert job.tag(remove=["run1"]).tags == ["good"]
    for bad in ("two words", "", "a,b", "x\x1b[2J"):
        with pytest.raises(UserError):
            job.tag(add=[bad])
    job.set_description("first line\nsecond line")
    with pytest.raises(UserError, match="control character"):
        job.set_description("bell\x07")
    assert job.model.description == "first line\nsecond line"
    assert [j.uid for j in project.jobs(tag="good")] == [job.uid]


# -- selections and plans -------------------------------------------------------------------------
def test_selections_plan_dry_run_json_and_confirmation(api, project):
    a, b, c = three_in_a_row(project)
    b.tag(add=["mid"])
    assert [j.uid for j in project.select(descendants_of=a.uid)] == [b.uid, c.uid]
    assert [j.uid for j in project.select(ancestors_of=c.uid)] == [a.uid, b.uid]
    assert [j.uid for j in project.select(chain=(a.uid, c.uid))] == [a.uid, b.uid, c.uid]
    assert [j.uid for j in project.select(tags=["mid"], types=["subset_particles"])] == [b.uid]
    home = api.instance.home
    before = db_snapshot(api)
    dry = cli(home, "job", "queue", project.uid, "--all", "--dry-run", check=True).stdout
    assert "queue to lane local" in dry and a.uid in dry
    as_json = cli(home, "--json", "job", "kill", project.uid, "--all", "--dry-run", check=True).stdout
    assert '"will": false' in as_json and "only queued or running jobs can be killed" in as_json
    no_yes = cli(home, "job", "queue", project.uid, a.uid, b.uid)
    assert no_yes.returncode == 2 and "add --yes" in no_yes.stderr
    empty = cli(home, "job", "queue", project.uid)
    assert empty.returncode == 2 and "select jobs by uid" in empty.stderr
    assert db_snapshot(api) == before
    done = cli(home, "job", "queue", project.uid, "--chain", a.uid, c.uid, "--yes", check=True).stdout
    assert "queue done for 3 job(s)" in done
    ops = project.operations()
    assert ops[0]["action"] == "queue" and ops[0]["finished_at"] and len(ops[0]["jobs"]) == 3
    again = cli(home, "job", "clear", project.uid, "--status", "queued", "--status", "building", "--yes", check=True)
    assert "clear done for 3 job(s)" in again.stdout


def test_a_job_refused_at_run_time_is_reported_and_the_rest_done(api, project, master):
    ok = project.create_job("test_sleep", params={"seconds": 0.1})
    late = project.create_job("test_sleep", params={"seconds": 0.1})
    plan = project.plan("queue", Selection(uids=[ok.uid, late.uid]))
    late.queue()  # its state changes between the plan and the run
    out = project.run_plan(plan)
    assert [(i.job_uid, i.outcome) for i in out.items] == [(ok.uid, "done"), (late.uid, "failed")]
    assert "only building jobs can be queued" in out.items[1].detail


def test_an_import_reads_only_what_the_manifest_lists(api, project, master, tmp_path):
    """An export folder is another user's input: what its manifest does not list (a link
    to someone's private file, a link to a folder that loops) is never read or copied, and
    a listed file swapped for a link or for other bytes is refused, naming it."""
    job = run(iterate(project, iterations=1, n=2))
    where = job.export(tmp_path / "ex")
    secret = tmp_path / "private" / "id_rsa"
    secret.parent.mkdir()
    secret.write_text("PRIVATE KEY")
    (where / "files" / "notes.txt").symlink_to(secret)
    (where / "files" / "loop").symlink_to(where / "files")
    imported = project.import_job(where)
    copied = {p.relative_to(imported.dir) for p in imported.dir.rglob("*")}
    assert not {Path("notes.txt"), Path("loop")} & copied
    assert all("PRIVATE" not in p.read_text(errors="replace") for p in imported.dir.rglob("*") if p.is_file())
    listed = next((where / "files").glob("stack_it*.bin"))
    original = listed.read_bytes()
    before = project.job_uids()
    for swap, says in [(lambda: (listed.unlink(), listed.symlink_to(secret)), "missing (or a link)"),
                       (lambda: listed.write_bytes(bytes(b ^ 0xFF for b in original)), "SHA-256 differs from the manifest")]:
        swap()
        with pytest.raises(InputFileError, match=f"{listed}: .*{re.escape(says)}"):
            project.import_job(where)
        assert project.job_uids() == before and not list(project.dir.glob(".importing-*"))
        listed.unlink()
        listed.write_bytes(original)


def test_export_refuses_what_is_not_completed(api, project):
    with pytest.raises(UserError, match="only completed jobs can be exported"):
        project.create_job("test_sleep").export()


def test_dataset_paths_are_rewritten_on_export(api, project, master, tmp_path):
    job = run(iterate(project, iterations=2, n=3))
    where = job.export(tmp_path / "ex")
    ds = Dataset.load(where / "files" / f"{job.uid}_particles_v1.cs")
    assert ds.strings("blob/path") == ["stack_it1.bin"] * 3
    assert (where / "files" / "stack_it1.bin").read_bytes() == bytes([1]) * 1000
    assert not (where / "files" / "checkpoints").exists() and (where / "manifest.json").exists()
    assert job.model.last_exported_location == str(where)
    imported = project.import_job(where)
    m = imported.model
    assert m.status == JobStatus.COMPLETED and m.imported_from.startswith(f"{project.uid} {job.uid} of instance")
    back = imported.load_output("particles")
    assert back.strings("blob/path") == [f"{imported.uid}/stack_it1.bin"] * 3
    assert np.array_equal(back["blob/idx"], job.load_output("particles")["blob/idx"])
