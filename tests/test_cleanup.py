"""Data cleanup: final results and what they protect, recorded sizes, the cleanup tool's
preview against the bytes a cleanup really frees, intermediate results cleared on
completion, and re-running a cleared chain with one command."""

from __future__ import annotations

import json

import pytest
from conftest import cli, wait_for

from cryohpc.errors import BuildError, UserError
from cryohpc.sizes import measure
from cryohpc.status import JobStatus


def done(job, status=JobStatus.COMPLETED, timeout=240):
    """The job ended with ``status``, and the master has recorded its size (just after)."""
    assert job.wait(timeout) == status, [e.message for e in job.model.errors_run]
    wait_for(lambda: (job.model.size_measured_at or 0) >= job.model.status_times[status.value], 30,
             f"{job.uid} measured")
    return job


def on_disk(project) -> int:
    """The project's bytes, measured afresh (job directories and other files)."""
    u = project.refresh_size()
    return u.jobs + u.other


def freed_matches(project, preview) -> int:
    before = on_disk(project)
    out = project.cleanup(preview)
    assert all(d.outcome == "done" for d in out.to_do), [(d.job_uid, d.detail) for d in out.to_do]
    after = on_disk(project)
    assert before - after == preview.freed_bytes > 0, (before, after, preview.as_dict()["estimate"])
    return before - after


@pytest.fixture
def cleanup_env(api, master):
    """W1: sim -> sub -> rec (final); sim -> other (non-final, linked into W2).
    W2: an iterative job (final, intermediate results kept), a killed job, a failed job,
    and a killed job marked complete."""
    project = api.create_project("cleanup")
    w1, w2 = project.create_workspace("one").uid, project.create_workspace("two").uid
    sim = project.create_job("simulate_particles", w1, params={"n_particles": 200, "box": 24, "psize_A": 2.0,
                                                               "snr": 5.0, "seed": 3, "particles_per_stack": 50})
    sub = project.create_job("subset_particles", w1, params={"max_items": 150})
    sub.connect("particles", sim.uid, "particles")
    rec = project.create_job("homo_reconstruct", w1, params={"checkpoint_every_s": 0})
    rec.connect("particles", sub.uid, "particles")
    other = project.create_job("homo_reconstruct", w1, params={"checkpoint_every_s": 0})
    other.connect("particles", sim.uid, "particles")
    other.link(w2)
    it = project.create_job("test_iterate", w2, params={"iterations": 4})
    it.set_intermediate_on_complete(False)
    killed = project.create_job("test_sleep", w2, params={"seconds": 60})
    failed = project.create_job("test_exit", w2)
    rescued = project.create_job("test_sleep", w2, params={"seconds": 60})
    for j in (sim, sub, rec, other, it, killed, failed, rescued):
        j.queue()
    for j in (rec, other, it):
        done(j)
    done(failed, JobStatus.FAILED)
    for j in (killed, rescued):
        wait_for(lambda j=j: j.status == JobStatus.RUNNING, 60, f"{j.uid} running")
        j.kill()
    rescued.mark_complete()
    rec.mark_final()
    it.mark_final()
    return project, w1, w2, dict(sim=sim, sub=sub, rec=rec, other=other, it=it, killed=killed, failed=failed,
                                 rescued=rescued)


def test_final_marks_protect_the_final_job_and_its_ancestors_with_messages(cleanup_env):
    project, _, _, j = cleanup_env
    marks = {x.uid: (x.is_final_result, x.is_ancestor_of_final_result) for x in project.jobs()}
    assert marks[j["rec"].uid] == (True, False)
    assert marks[j["sim"].uid] == marks[j["sub"].uid] == (False, True)
    assert marks[j["other"].uid] == (False, False)
    with pytest.raises(UserError, match=f"{j['sim'].uid} is an ancestor of final result {j['rec'].uid}"):
        j["sim"].delete()
    with pytest.raises(UserError, match="marked as a final result; it cannot be cleared"):
        j["rec"].clear()
    with pytest.raises(UserError, match="marked as a final result; it cannot be deleted"):
        j["rec"].delete()
    with pytest.raises(UserError, match="it cannot be restarted"):
        j["rec"].restart()
    j["sub"].clear()  # an ancestor may be cleared: it can be re-run to the same result
    with pytest.raises(BuildError, match=f"ancestor of final result {j['rec'].uid}; it cannot be changed"):
        j["sub"].set_params(max_items=10)
    with pytest.raises(BuildError, match="cannot be changed"):
        j["sub"].disconnect("particles")
    with pytest.raises(UserError, match="only completed jobs can be marked final"):
        j["failed"].mark_final()
    j["rec"].unmark_final()  # marks are recomputed: nothing protects sim and sub now
    assert not project.find_job(j["sim"].uid).model.is_ancestor_of_final_result
    j["sub"].set_params(max_items=10)


def test_recorded_sizes_follow_runs_kills_failures_and_clears(cleanup_env):
    project, _, _, j = cleanup_env
    for name in ("sim", "rec", "it", "killed", "failed"):
        m = j[name].model
        assert m.size_measured_at is not None, name
        assert m.job_dir_size == measure(j[name].dir).bytes > 0, name
    assert j["it"].model.intermediate_size > 0  # its checkpoints and three earlier versions
    j["killed"].clear()
    assert j["killed"].model.job_dir_size == 0 and measure(j["killed"].dir).bytes == 0
    u = project.refresh_size()
    assert u.jobs == sum(measure(x.dir).bytes for x in j.values())
    assert project.model.size_measured_at is not None


def test_cleanup_preview_equals_bytes_freed_and_final_results_stay_usable(cleanup_env, api):
    project, w1, w2, j = cleanup_env
    w1_before = {x.uid: (x.status, x.job_dir_size) for x in project.jobs(workspace=w1)}

    # 1. W2, clear killed and failed: the marked-complete job is spared
    pv = project.cleanup_preview(workspace=w2, clear_killed=True, clear_failed=True)
    actions = {d.job_uid: d.action for d in pv.to_do}
    assert actions == {j["killed"].uid: "clear", j["failed"].uid: "clear"}
    freed_matches(project, pv)
    assert j["rescued"].status == JobStatus.COMPLETED

    # 2. W2, delete non-final: the linked job goes from both workspaces; W1's own jobs stay
    pv = project.cleanup_preview(workspace=w2, delete_non_final=True)
    actions = {d.job_uid: d.action for d in pv.to_do}
    assert actions == {u: "delete" for u in (j["other"].uid, j["killed"].uid, j["failed"].uid, j["rescued"].uid)}
    assert pv.tabs["finality"]["final"].jobs == 1  # the iterative job, in W2
    freed_matches(project, pv)
    assert j["other"].uid not in project.job_uids(w1)
    assert {x.uid: (x.status, x.job_dir_size) for x in project.jobs(workspace=w1)} == \
        {u: v for u, v in w1_before.items() if u != j["other"].uid}

    # 3. the project, intermediate results: the final iterative job keeps its final version
    pv = project.cleanup_preview(clear_intermediate=True, delete_non_final=True, clear_preprocessing=True)
    actions = {d.job_uid: d.action for d in pv.to_do}
    assert actions == {j["it"].uid: "trim", j["sub"].uid: "clear"}  # sim writes stacks: extraction, not asked
    freed_matches(project, pv)
    it = j["it"].model
    assert it.output("particles").result("blob").cleared_versions == [0, 1, 2]
    assert not (j["it"].dir / "checkpoints").exists()

    # final results and their ancestors' outputs still feed new jobs
    val = project.create_job("validate_fsc")
    val.connect("volume", j["rec"].uid, "volume")
    again = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    again.connect("particles", j["sim"].uid, "particles")
    val.queue()
    again.queue()
    done(val)
    done(again)


def test_cleared_chain_comes_back_with_one_command_and_says_so(cleanup_env, api, home):
    project, _, _, j = cleanup_env
    j["rec"].unmark_final()
    for name in ("rec", "sub", "sim"):
        j[name].clear()
    rec2 = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    rec2.connect("particles", j["sub"].uid, "particles")
    assert rec2.cleared_ancestors() == [j["sim"].uid, j["sub"].uid]
    shown = cli(home, "job", "show", project.uid, rec2.uid, check=True).stdout
    assert f"ancestors to run again first: {j['sim'].uid}, {j['sub'].uid}" in shown
    out = cli(home, "--json", "job", "queue", project.uid, rec2.uid, "--with-ancestors", check=True)
    assert [x["uid"] for x in json.loads(out.stdout)] == [j["sim"].uid, j["sub"].uid, rec2.uid]
    done(rec2)
    assert j["sub"].status == j["sim"].status == JobStatus.COMPLETED


def test_cleanup_cli_preview_json_and_refusals(cleanup_env, home):
    project, _, w2, j = cleanup_env
    out = cli(home, "--json", "cleanup", project.uid, "--workspace", w2, "--clear-failed", "--preview", check=True)
    doc = json.loads(out.stdout)
    assert doc["estimate"]["jobs_cleared"] == 1 and doc["estimate"]["bytes_cleared"] == j["failed"].model.job_dir_size
    assert set(doc["tabs"]) == {"job kinds", "intermediate results", "finality", "status"}
    assert j["failed"].status == JobStatus.FAILED  # a preview changes nothing
    bad = cli(home, "cleanup", project.uid, "--clear-failed", "--delete-failed")
    assert bad.returncode == 2 and "either clear-failed or delete-failed" in bad.stderr
    refused = cli(home, "cleanup", project.uid, "--clear-failed")  # not a terminal, no --yes
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert j["failed"].status == JobStatus.FAILED
    ok = cli(home, "cleanup", project.uid, "--clear-failed", "--yes", check=True)
    assert "cleanup done: 1 job(s)" in ok.stdout and j["failed"].status == JobStatus.BUILDING
    gone = cli(home, "job", "delete", project.uid, j["sim"].uid)
    assert gone.returncode == 2 and f"ancestor of final result {j['rec'].uid}" in gone.stderr


def test_intermediate_results_go_on_completion_unless_kept(api, project, master):
    kept = project.create_job("test_iterate", params={"iterations": 3})
    kept.set_intermediate_on_complete(False)
    trimmed = project.create_job("test_iterate", params={"iterations": 3})
    for j in (kept, trimmed):
        j.queue()
        done(j)
    assert (kept.dir / "checkpoints").is_dir() and kept.model.intermediate_size > 0
    assert not (trimmed.dir / "checkpoints").exists() and trimmed.model.intermediate_size == 0
    result = trimmed.model.output("particles").result("blob")
    assert result.cleared_versions == [0, 1]
    assert (project.dir / result.metafiles[-1]).is_file()
    assert trimmed.model.job_dir_size == measure(trimmed.dir).bytes
    project.set_intermediate_on_complete(False)
    off = project.create_job("test_iterate", params={"iterations": 2})
    off.queue()
    done(off)
    assert (off.dir / "checkpoints").is_dir()


def test_raw_data_imported_from_outside_the_project_is_never_touched(api, project, master, sample):
    raw = sorted(p for p in sample.star.parent.rglob("*") if p.is_file())
    sums = {p: p.read_bytes() for p in raw}
    imp = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    rec = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    rec.connect("particles", imp.uid, "imported_particles")
    imp.queue()
    rec.queue()
    done(rec)
    imp_dir = imp.dir
    links = [p for p in imp_dir.rglob("*") if p.is_symlink()]
    assert links  # stacks are linked, not copied: their bytes are not the project's
    assert imp.model.job_dir_size < sum(len(b) for b in sums.values())
    pv = project.cleanup_preview(delete_non_final=True)
    assert {d.job_uid for d in pv.to_do} == {imp.uid, rec.uid}
    freed_matches(project, pv)
    assert not imp_dir.exists()
    assert sorted(p for p in sample.star.parent.rglob("*") if p.is_file()) == raw
    assert all(p.read_bytes() == b for p, b in sums.items())
