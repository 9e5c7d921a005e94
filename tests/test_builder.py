"""The job builder: connections, slot overrides, passthrough, build errors, params."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import db_snapshot, wait_for

from cryohpc.errors import BuildError, NotFoundError
from cryohpc.status import JobStatus


def run(job, timeout_s: float = 60) -> None:
    """Queue and wait until the master's last write for the job (its directory's size,
    measured after the end), so a database snapshot taken next stays still."""
    job.queue()
    status = job.wait(timeout_s)
    assert status == JobStatus.COMPLETED, job.model.errors_run
    wait_for(lambda: (job.model.size_measured_at or 0) >= job.model.status_times["completed"], 30,
             "the job's size measured after it completed")


@pytest.fixture
def imported(project, sample, master):
    job = project.create_job("import_particles", params={"particle_meta_path": str(sample.star)})
    run(job)
    return job


@pytest.fixture
def volume_job(project, sample_volume, master):
    job = project.create_job("import_volume", params={"volume_path": str(sample_volume)})
    run(job)
    return job


def test_new_job_has_declared_outputs_and_build_errors(project):
    job = project.create_job("subset_particles").model
    assert job.status == JobStatus.BUILDING
    assert [g.name for g in job.outputs] == ["particles"]
    assert job.build_errors == ["input 'particles' needs at least 1 connected particle group(s)"]
    imp = project.create_job("import_particles").model
    assert imp.build_errors == ["import_particles param 'particle_meta_path' is required"]


def test_job_with_build_errors_cannot_be_queued(api, project):
    job = project.create_job("subset_particles")
    before = db_snapshot(api)
    with pytest.raises(BuildError, match="cannot be queued:\n  input 'particles' needs at least 1"):
        job.queue()
    assert db_snapshot(api) == before


def test_wrong_item_type_is_refused_and_nothing_changes(api, project, volume_job):
    job = project.create_job("subset_particles")
    before = db_snapshot(api)
    with pytest.raises(BuildError, match=r"cannot connect J1\.imported_volume_1 to J2\.particles: "
                                         r"the output holds volume items, the input takes particle"):
        job.connect("particles", volume_job.uid, "imported_volume_1")
    assert db_snapshot(api) == before


def test_unknown_names_are_refused(project, imported):
    job = project.create_job("subset_particles")
    with pytest.raises(BuildError, match="has no input 'nope' \\(inputs: particles\\)"):
        job.connect("nope", imported.uid, "imported_particles")
    with pytest.raises(BuildError, match="has no output 'nope' \\(outputs: imported_particles\\)"):
        job.connect("particles", imported.uid, "nope")
    with pytest.raises(NotFoundError, match="no job J99 in project P1"):
        job.connect("particles", "J99", "imported_particles")
    with pytest.raises(BuildError, match="has no param 'nope'"):
        job.set_params(nope=1)
    with pytest.raises(BuildError, match="'max_items': 'lots' is not a valid int"):
        job.set_params(max_items="lots")
    with pytest.raises(BuildError, match="'max_items': 0 is below the minimum 1"):
        job.set_params(max_items=0)
    with pytest.raises(BuildError, match="no job type has a param 'colour'"):
        project.set_default_params(colour="blue")
    with pytest.raises(BuildError, match="'compute_use_ssd': 'maybe' is not a valid bool"):
        project.set_default_params(compute_use_ssd="maybe")
    rec = project.create_job("homo_reconstruct")
    with pytest.raises(BuildError, match=r"'symmetry': 'I3' is not valid \(use C<n> or D<n>"):
        rec.set_params(symmetry="I3")
    assert rec.set_params(symmetry="d2").params["symmetry"] == "d2"


def test_connect_updates_parents_children_and_cycles_are_refused(project, imported):
    a = project.create_job("subset_particles")
    a.connect("particles", imported.uid, "imported_particles")
    assert a.model.parents == [imported.uid] and a.model.build_errors == []
    assert imported.model.children == [a.uid]
    b = project.create_job("subset_particles")
    b.connect("particles", a.uid, "particles")  # allowed before a has run
    with pytest.raises(BuildError, match="would make a cycle"):
        a.connect("particles", b.uid, "particles")
    with pytest.raises(BuildError, match="already connected"):
        a.connect("particles", imported.uid, "imported_particles")
    a.disconnect("particles")
    assert a.model.parents == [] and imported.model.children == []
    assert a.model.build_errors


def test_subset_passes_through_unused_results(project, imported, sample):
    job = project.create_job("subset_particles", params={"max_items": 10})
    job.connect("particles", imported.uid, "imported_particles")
    run(job)
    group = job.model.output("particles")
    names = {r.name: r.passthrough for r in group.results}
    assert names == {"blob": False, "ctf": True, "alignments3D": True}
    assert group.num_items == 10
    out = job.load_output("particles")
    src = imported.load_output("imported_particles")
    assert np.array_equal(out["uid"], src["uid"][:10])
    assert np.array_equal(out["ctf/df1_A"], src["ctf/df1_A"][:10])
    assert np.array_equal(out["alignments3D/pose"], src["alignments3D/pose"][:10])


def test_several_groups_append_and_duplicates_fail_the_job(project, imported, sample):
    first = project.create_job("subset_particles", params={"max_items": 5})
    first.connect("particles", imported.uid, "imported_particles")
    run(first)
    second = project.create_job("subset_particles", params={"where_field": "alignments3D/split", "where_value": "1"})
    second.connect("particles", imported.uid, "imported_particles")
    run(second)
    both = project.create_job("subset_particles")
    both.connect("particles", first.uid, "particles")
    both.connect("particles", second.uid, "particles")
    both.queue()
    # items 1 and 3 of the first five have split 1: they arrive twice
    assert both.wait(60) == JobStatus.FAILED
    assert "uid(s) occur more than once" in both.model.errors_run[-1].message
    assert not any(r.metafiles for r in both.model.output("particles").results)  # nothing registered
    disjoint = project.create_job("subset_particles")
    third = project.create_job("subset_particles", params={"where_field": "alignments3D/split", "where_value": "0"})
    third.connect("particles", imported.uid, "imported_particles")
    run(third)
    disjoint.connect("particles", third.uid, "particles")
    disjoint.connect("particles", second.uid, "particles")
    run(disjoint)
    assert disjoint.model.output("particles").num_items == sample.n


def test_slot_override_takes_one_result_from_another_job(project, imported):
    # a re-import of J1's own .cs keeps the uids but, here, another pixel size: the
    # "downsampled particles" case of CryoSPARC's Job Builder
    other = project.create_job("import_particles", params={
        "particle_meta_path": str(imported.output_path("imported_particles")), "psize_A": 3.5})
    run(other)
    job = project.create_job("subset_particles")
    job.connect("particles", imported.uid, "imported_particles")
    job.connect_slot("particles", "blob", other.uid, "imported_particles", "blob")
    assert sorted(job.model.parents) == sorted([imported.uid, other.uid])
    assert job.uid in other.model.children
    run(job)
    out = job.load_output("particles")
    src = imported.load_output("imported_particles")
    assert len(out) == len(src)
    assert np.allclose(out["blob/psize_A"], 3.5)  # from the override
    assert np.array_equal(out["ctf/df1_A"], src["ctf/df1_A"])  # from the connection


def test_slot_override_errors(project, imported, volume_job):
    job = project.create_job("subset_particles")
    job.connect("particles", imported.uid, "imported_particles")
    with pytest.raises(BuildError, match="has no slot 'ctf' \\(slots: blob\\)"):
        job.connect_slot("particles", "ctf", imported.uid, "imported_particles", "ctf")
    with pytest.raises(BuildError, match="holds volume items"):
        job.connect_slot("particles", "blob", volume_job.uid, "imported_volume_1", "map")
    with pytest.raises(BuildError, match="has no connection #3"):
        job.connect_slot("particles", "blob", imported.uid, "imported_particles", "blob", index=3)


def test_changing_a_queued_job_is_refused(project, imported):
    job = project.create_job("subset_particles")
    job.connect("particles", imported.uid, "imported_particles")
    with project.api.store.write() as tx:  # queued, without a master picking it up
        j = tx.get_job(project.uid, job.uid)
        j.status = JobStatus.QUEUED
        tx.put_job(j)
    with pytest.raises(BuildError, match="is queued; only building jobs can be changed"):
        job.set_params(max_items=3)


def test_override_brings_only_its_slot(project, imported):
    """The override's file also holds ctf and alignments; they must not replace the
    connection's."""
    other = project.create_job("import_particles", params={
        "particle_meta_path": str(imported.output_path("imported_particles")), "psize_A": 3.5,
        "accel_kv": 200.0})
    run(other)
    rec = project.create_job("subset_particles")
    rec.connect("particles", imported.uid, "imported_particles")
    rec.connect_slot("particles", "blob", other.uid, "imported_particles", "blob")
    run(rec)
    out = rec.load_output("particles")
    src = imported.load_output("imported_particles")
    assert np.allclose(out["blob/psize_A"], 3.5)
    assert np.array_equal(out["ctf/accel_kv"], src["ctf/accel_kv"])
    assert np.array_equal(out["alignments3D/pose"], src["alignments3D/pose"])
