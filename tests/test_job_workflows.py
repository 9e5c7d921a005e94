"""Job management end to end: a clone chain reproduces its original's results, an export
imported into a second instance feeds a new reconstruction there, and a 50-job clear or
delete killed midway leaves each job done or untouched and completes when run again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ThreadMaster

from cryohpc.api import Api
from cryohpc.compute.io_mrc import read_volume
from cryohpc.removals import Sweeper
from cryohpc.status import JobStatus


def done(job, timeout=240):
    assert job.wait(timeout) == JobStatus.COMPLETED, [e.message for e in job.model.errors_run]


def map_of(project, job, prefix="map"):
    ds = job.load_output("volume")
    return read_volume(project.dir / ds.strings(f"{prefix}/path")[0])[0]


@pytest.fixture
def chain_env(api, master):
    """simulate -> subset -> reconstruct -> validate, the validation also taking the
    simulation's true volume as reference (a side branch)."""
    project = api.create_project("chain")
    sim = project.create_job("simulate_particles", params={"n_particles": 300, "box": 24, "psize_A": 2.0,
                                                           "snr": 5.0, "seed": 3})
    sub = project.create_job("subset_particles", params={"max_items": 200, "random_seed": 1})
    sub.connect("particles", sim.uid, "particles")
    rec = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    rec.connect("particles", sub.uid, "particles")
    val = project.create_job("validate_fsc")
    val.connect("volume", rec.uid, "volume")
    val.connect("reference", sim.uid, "true_volume")
    for j in (sim, sub, rec, val):
        j.queue()
    done(val)
    return api, project, [sim, sub, rec, val]


def test_clone_chain_of_four_jobs_reproduces_the_results(chain_env):
    api, project, (sim, sub, rec, val) = chain_env
    unrelated = project.create_job("test_sleep")
    clones = project.clone_chain(sim.uid, val.uid, new_workspace="again")
    assert [c.model.cloned_from for c in clones] == [sim.uid, sub.uid, rec.uid, val.uid]
    csim, csub, crec, cval = clones
    assert cval.model.inputs["reference"][0].job_uid == csim.uid  # the side branch is re-wired too
    for c in clones:
        c.queue()
    done(cval)
    assert np.array_equal(map_of(project, rec), map_of(project, crec))
    numbers = [{k: v for k, v in j.model.output("volume").summary.items() if not isinstance(v, str)}
               for j in (val, cval)]
    assert numbers[0] == numbers[1] and numbers[0]  # the same FSC figures against the truth
    with pytest.raises(Exception, match="not on one chain"):
        project.clone_chain(sim.uid, unrelated.uid)


def test_export_import_into_a_second_instance_and_reconstruct_there(chain_env, tmp_path):
    api, project, (sim, sub, rec, val) = chain_env
    where = rec.export(tmp_path / "exported")
    other = Api.init(tmp_path / "home2", tmp_path / "projects2", poll_interval_s=0.1, heartbeat_interval_s=0.5)
    master2 = ThreadMaster(other).start()
    try:
        p2 = other.create_project("elsewhere")
        imported = p2.import_job(where)
        assert imported.model.status == JobStatus.COMPLETED
        assert np.array_equal(map_of(p2, imported), map_of(project, rec))
        again = p2.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
        again.connect("particles", imported.uid, "particles")  # passthrough blob, ctf, poses from the export
        again.queue()
        done(again)
        assert np.allclose(map_of(p2, again), map_of(project, rec), atol=1e-5 * np.abs(map_of(project, rec)).max())
        # a damaged export is refused, naming the file, and nothing is created
        victim = next((where / "files" / "_referenced").rglob("*.mrcs"))
        victim.write_bytes(victim.read_bytes()[:-8] + b"12345678")
        before = p2.job_uids()
        with pytest.raises(Exception, match=f"{victim.name}: size or SHA-256 differs"):
            p2.import_job(where)
        assert p2.job_uids() == before
    finally:
        master2.stop()


def fabricated_completed_jobs(api, project, n: int, files: int = 30) -> list:
    """n completed jobs, each with files in its directory (their history does not matter
    to a clear or a delete)."""
    jobs = []
    for _ in range(n):
        h = project.create_job("test_sleep")
        for k in range(files):
            (h.dir / f"out{k}.bin").write_bytes(b"x" * 4096)
        with api.store.write() as tx:
            j = tx.get_job(project.uid, h.uid)
            j.status = JobStatus.COMPLETED
            tx.put_job(j)
        jobs.append(h)
    return jobs


def _kill_when(proc, api, project, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with api.store.read() as tx:
            ops = tx.operations(project.uid, limit=1)
        if ops and len(ops[0]["jobs"]) >= at_least:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        time.sleep(0.005)
    raise AssertionError("the operation finished before it could be interrupted")


@pytest.mark.parametrize("action", ["clear", "delete"])
def test_a_50_job_operation_killed_midway_leaves_each_job_done_or_untouched(api, project, action, monkeypatch):
    jobs = fabricated_completed_jobs(api, project, 50)
    dirs = {h.uid: h.dir for h in jobs}
    cmd = [sys.executable, "-m", "cryohpc.cli", "--home", str(api.instance.home), "job", action, project.uid,
           "--status", "completed", "--yes"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _kill_when(proc, api, project, 10)

    def states():
        out = {}
        with api.store.read() as tx:
            for uid, d in dirs.items():
                j = tx.get_job(project.uid, uid, include_deleted=True)
                pending = bool(tx.removals(project.uid, uid))
                files = sorted(p.name for p in d.iterdir()) if d.exists() else None
                touched = j.status == JobStatus.BUILDING if action == "clear" else j.deleted
                whole = files is not None and len(files) == 30
                gone = not files
                assert (touched and (gone or pending)) or (not touched and whole), (uid, j.status, files, pending)
                out[uid] = touched
        return out

    first = states()
    assert 10 <= sum(first.values()) < 50, "the kill came too late to test anything"
    # the master finishes removals an interrupted command left (no grace period here)
    monkeypatch.setattr(Sweeper, "GRACE_S", 0.0)
    m = ThreadMaster(api).start()
    try:
        deadline = time.monotonic() + 30
        while True:
            with api.store.read() as tx:
                if not tx.removals(project.uid):
                    break
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        m.stop()
    states()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sum(states().values()) == 50
    for d in dirs.values():
        assert not d.exists() if action == "delete" else not any(d.iterdir())
    with api.store.read() as tx:
        assert tx.removals() == [] and all(op["finished_at"] for op in tx.operations(project.uid))
    assert os.path.isdir(project.dir)
