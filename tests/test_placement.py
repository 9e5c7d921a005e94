"""Placement as a pure function: queued jobs, parents' states, running jobs and lane views
in, decisions out. No database, no lane objects."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.model import Job, Resources, Run
from cryohpc.scheduler.placement import Action, LaneView, place
from cryohpc.status import JobStatus, QueueStatus


def job(uid: int, *, cpus=1, gpus=0, ram=1.0, priority=0, lane="local", parents=(), queued_at=0.0,
        gpu_ids=None, target=None) -> Job:
    return Job(uid=f"J{uid}", project_uid="P1", type="t", job_dir=f"J{uid}", status=JobStatus.QUEUED,
               priority=priority, queued_lane=lane, parents=list(parents), queued_gpu_ids=gpu_ids,
               queued_target=target, status_times={"queued": queued_at},
               resources_needed=Resources(cpus=cpus, gpus=gpus, ram_gb=ram))


def running(uid: int, alloc: Resources, lane: str = "local") -> Job:
    j = job(uid, lane=lane)
    j.status = JobStatus.RUNNING
    j.run = Run(lane=lane, resources=alloc)
    return j


ONE_BOX = {"local": LaneView(targets={"": Resources(cpus=4, ram_gb=16, gpus=2, gpu_ids=[0, 1])})}


def test_priority_first_and_a_waiting_big_job_holds_its_lane():
    big = job(1, cpus=4, priority=5)
    small = job(2, cpus=1, priority=0)
    busy = running(9, Resources(cpus=1, ram_gb=1))
    decisions = {d.job.uid: d for d in place([small, big], {}, [busy], ONE_BOX)}
    assert decisions["J1"].action == Action.WAIT and decisions["J1"].queue_status == QueueStatus.WAITING_RESOURCES
    assert decisions["J2"].action == Action.WAIT  # would fit, but J1 came first and waits
    assert [d.job.uid for d in place([small, big], {}, [busy], ONE_BOX)] == ["J1", "J2"]


def test_parents_unknown_lane_targets_and_batch_lanes():
    lanes = {**ONE_BOX, "slurm": LaneView(batch=True),
             "boxes": LaneView(targets={"a": Resources(cpus=2, ram_gb=8), "b": Resources(cpus=2, ram_gb=8)},
                               down=frozenset({"a"}))}
    jobs = [job(1, parents=["J7"]), job(2, parents=["J8"]), job(3, lane="gone"), job(4, lane="slurm", gpus=4),
            job(5, lane="boxes", target="a"), job(6, lane="boxes"), job(7, lane="boxes", target="zz")]
    d = {x.job.uid: x for x in place(jobs, {("P1", "J7"): JobStatus.RUNNING, ("P1", "J8"): JobStatus.KILLED}, [], lanes)}
    assert d["J1"].queue_status == QueueStatus.WAITING_INPUTS
    assert d["J2"].queue_status == QueueStatus.WAITING_PARENT_FAILED
    assert d["J3"].action == Action.FAIL and "'gone' is not configured" in d["J3"].message
    assert d["J4"].action == Action.LAUNCH and d["J4"].alloc.gpus == 4 and d["J4"].alloc.gpu_ids == []
    assert d["J5"].queue_status == QueueStatus.WAITING_UNREACHABLE
    assert d["J6"].action == Action.LAUNCH and d["J6"].alloc.target == "b"
    assert d["J7"].action == Action.FAIL and "'zz' is no longer in lane 'boxes'" in d["J7"].message


def test_chosen_gpus_are_given_or_waited_for():
    taken = running(9, Resources(cpus=1, ram_gb=1, gpus=1, gpu_ids=[1]))
    d = place([job(1, gpus=1, gpu_ids=[1]), job(2, gpus=1, gpu_ids=[0], priority=-1)], {}, [taken], ONE_BOX)
    assert d[0].action == Action.WAIT
    assert d[1].action == Action.WAIT  # the lane is held by J1, which asked first


jobs_st = st.lists(st.tuples(st.integers(1, 4), st.integers(0, 2), st.floats(0.5, 8), st.integers(-2, 2)),
                   min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(jobs_st, st.integers(0, 3))
def test_launches_never_overcommit_and_respect_priority(specs, n_running):
    """Whatever the queue, what placement launches plus what runs fits every target, no
    GPU is given twice, and no job launches while a job before it waits on its lane."""
    lanes = {"local": LaneView(targets={"": Resources(cpus=6, ram_gb=24, gpus=3, gpu_ids=[0, 1, 2])})}
    active = [running(100 + i, Resources(cpus=1, ram_gb=2, gpus=1, gpu_ids=[i])) for i in range(n_running)]
    queued = [job(i, cpus=c, gpus=g, ram=r, priority=p, queued_at=float(i)) for i, (c, g, r, p) in enumerate(specs)]
    decisions = place(queued, {}, active, lanes)
    launched = [d.alloc for d in decisions if d.action == Action.LAUNCH]
    allocs = launched + [a.run.resources for a in active]
    assert sum(a.cpus for a in allocs) <= 6 and sum(a.ram_gb for a in allocs) <= 24 + 1e-9
    gpus = [g for a in allocs for g in a.gpu_ids]
    assert len(gpus) == len(set(gpus)) and set(gpus) <= {0, 1, 2}
    seen_wait = False
    for d in decisions:  # decisions come in launch order
        if d.action == Action.WAIT:
            seen_wait = True
        assert not (seen_wait and d.action == Action.LAUNCH)
    for d in decisions:
        if d.action == Action.LAUNCH:
            assert d.alloc.gpus == d.job.resources_needed.gpus == len(d.alloc.gpu_ids)


def test_each_rank_takes_a_core_unless_the_lane_oversubscribes():
    two_ranks = job(1, cpus=1)
    two_ranks.resources_needed.mpi_ranks = 2
    box = Resources(cpus=4, ram_gb=16)
    (d,) = place([two_ranks], {}, [], {"local": LaneView(targets={"": box})})
    assert d.alloc.cpus == 2
    (d,) = place([two_ranks], {}, [], {"local": LaneView(targets={"": box}, oversubscribe=True)})
    assert d.alloc.cpus == 1
