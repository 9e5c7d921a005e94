"""Jobs across the nodes of a real multi-node SLURM (scripts/dev-slurm.sh --nodes 2: each
node a network namespace with its own slurmd, hostname, address and node-local scratch),
and what a cluster does to long jobs: a node dies, a job is preempted, the time runs out."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ThreadMaster, free_port

from cryohpc.api import Api
from cryohpc.compute.io_mrc import read_volume
from cryohpc.status import JobStatus

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "scripts/dev-slurm.sh")


def dev_slurm(*args: str, timeout: float = 400, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multinode")
    ports = {name: str(free_port()) for name in ("SLURMCTLD_PORT", "SLURMD_PORT", "SLURMDBD_PORT", "MYSQL_PORT")}
    up = dev_slurm("up", str(folder), "--nodes", "2", env=ports)
    if up.returncode != 0:
        dev_slurm("down", str(folder))
    assert up.returncode == 0, up.stdout + up.stderr
    old = os.environ.get("SLURM_CONF"), os.environ["PATH"]
    os.environ["SLURM_CONF"] = str(folder / "slurm.conf")
    os.environ["PATH"] = f"{folder / 'bin'}{os.pathsep}{old[1]}"  # sacct and sacctmgr that reach its slurmdbd
    yield folder
    down = dev_slurm("down", str(folder))
    os.environ["PATH"] = old[1]
    if old[0] is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = old[0]
    assert down.returncode == 0, down.stderr
    assert str(folder) not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


LANE = """lanes:
  - name: multi
    type: cluster
    kind: slurm
    script_template: slurm.sh.j2
    poll_interval_s: 0.5
    command_timeout_s: 30
    max_requeues: {max_requeues}
    stop_warning_s: {stop_warning_s}
    worker: {{cache_path: {ssd}}}
    custom_vars:
      - {{name: partition, type: str, default: batch}}
      - {{name: time_limit, type: str}}
"""


@pytest.fixture
def multi(two_nodes, tmp_path):
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5,
                   heartbeat_timeout_s=120)
    (api.instance.paths.site_configs / "multi.yaml").write_text(
        LANE.format(ssd=two_nodes / "local-ssd", max_requeues=3, stop_warning_s=30))
    master = ThreadMaster(api).start()
    yield api, api.create_project("multi"), two_nodes
    master.stop()
    subprocess.run(["scancel", "-u", str(os.getuid())], timeout=30)


def simulate(project, n: int = 3000, box: int = 32):
    sim = project.create_job("simulate_particles", params={"n_particles": n, "box": box, "psize_A": 3.0, "snr": 2,
                                                          "particles_per_stack": 500})
    sim.queue()
    assert sim.wait(300) == JobStatus.COMPLETED, sim.model.errors_run
    return sim


def reconstruct(project, sim, nodes: int, ranks: int = 4, gpus: int = 0, **params):
    rec = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks, "compute_num_nodes": nodes,
                                                        "compute_num_gpus": gpus, **params})
    rec.connect("particles", sim.uid, "particles")
    rec.queue(lane="multi")
    return rec


def volume(project, job) -> np.ndarray:
    return read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]


def test_four_ranks_on_two_nodes_make_the_one_node_map(multi):
    api, project, folder = multi
    sim = simulate(project)
    # GPU 0 of node2 taken by another job: the reconstruction's GPUs there are 1 and 2
    holder = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-w", "node2", "-n1", "--gres=gpu:1", "--wrap", "sleep 600"],
                            capture_output=True, text=True, timeout=30)
    assert holder.returncode == 0, holder.stderr
    one = reconstruct(project, sim, nodes=1)
    two = reconstruct(project, sim, nodes=2, gpus=4)
    assert one.wait(300) == JobStatus.COMPLETED, one.model.errors_run
    assert two.wait(300) == JobStatus.COMPLETED, two.model.errors_run
    script = (two.dir / "submit.sh").read_text()
    assert "#SBATCH --nodes=2" in script and "#SBATCH --ntasks-per-node=2" in script
    assert "#SBATCH --gres=gpu:2" in script
    a, b = volume(project, one), volume(project, two)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    placed = [line for line in two.log_lines() if "local rank" in line]
    assert len(placed) == 4, placed
    by_host = {h: [line for line in placed if f" on {h}:" in line] for h in ("node1", "node2")}
    assert all(len(lines) == 2 for lines in by_host.values()), placed
    assert sorted(line.rsplit("GPU ", 1)[1] for line in by_host["node2"]) == ["1", "2"], placed
    assert sorted(line.rsplit("GPU ", 1)[1] for line in by_host["node1"]) == ["0", "1"], placed
    use = two.model.run.cache_use
    assert set(use) == {"node1", "node2"}, use
    assert all(u["path"].startswith(str(folder / "local-ssd")) for u in use.values()), use
    for node in ("node1", "node2"):  # each node's own scratch, not the shared one
        assert any((folder / "scratch" / node).rglob("*.dat")), node
    stacks = sum(f.stat().st_size for f in (sim.dir / "simulated").iterdir())
    # node1's cache holds what the one-node run copied; node2 copied only its ranks' share
    assert 0 < use["node2"]["copied_bytes"] < 0.75 * stacks, (use, stacks)
    runs = two.model.runs
    assert len(runs) == 1 and runs[0].state == "completed" and runs[0].nodes == "node[1-2]"
    assert sorted(u["host"] for u in runs[0].usage) == ["node1", "node1", "node2", "node2"]
    assert all(u["cpu_s"] > 0 and u["max_rss_bytes"] > 0 for u in runs[0].usage)
    check_usage(api, project, two, folder)


def wait_accounted(job, timeout_s: float = 120):
    """The run once the scheduler's accounting (sacct) has been added to it."""
    deadline = time.monotonic() + timeout_s
    while job.model.runs[-1].scheduler is None:
        assert time.monotonic() < deadline, "no scheduler accounting arrived"
        time.sleep(0.5)
    return job.model.runs[-1]


def scheduler_elapsed_s(folder: Path, cluster_job_id: str) -> float:
    """What SLURM's job-completion log (jobcomp/filetxt) says the job took."""
    from datetime import datetime

    line = next(x for x in (folder / "log" / "jobcomp.txt").read_text().splitlines()
                if x.startswith(f"JobId={cluster_job_id} "))
    fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
    start, end = (datetime.fromisoformat(fields[k]).timestamp() for k in ("StartTime", "EndTime"))
    return end - start


def check_usage(api, project, job, folder: Path) -> None:
    """``cryohpc usage`` against the worker's per-rank figures and the scheduler's own: its
    accounting (sacct through slurmdbd) and its job-completion log."""
    import csv
    import io
    import json

    from conftest import cli

    run = wait_accounted(job)
    sched = run.scheduler
    sacct = subprocess.run(["sacct", "-n", "-X", "-P", "-j", run.cluster_job_id, "-o", "State,ElapsedRaw,AllocTRES"],
                           capture_output=True, text=True, timeout=30, check=True).stdout.strip().split("|")
    assert sched["state"] == sacct[0] == "COMPLETED" and sched["elapsed_s"] == float(sacct[1])
    assert sched["tres"] == sacct[2] and sched["billing"] == run.resources.cpus
    assert sched["elapsed_s"] == pytest.approx(scheduler_elapsed_s(folder, run.cluster_job_id), abs=1.0)
    assert sched["cpu_s"] > 0 and sched["max_rss_bytes"] >= 0
    rows = json.loads(cli(api.instance.home, "--json", "usage", "--project", project.uid, "--by", "type",
                          check=True).stdout)
    mine = next(r for r in rows if r["type"] == "homo_reconstruct")
    runs = [r for j in project.jobs() if j.type == "homo_reconstruct" for r in j.runs]
    assert mine["runs"] == len(runs) and mine["jobs"] == len({j.uid for j in project.jobs()
                                                               if j.type == "homo_reconstruct" and j.runs})
    assert mine["cpu_hours"] == pytest.approx(sum(u["cpu_s"] for r in runs for u in r.usage) / 3600, rel=1e-9)
    everything = [wait_accounted(project.find_job(j.uid)) for j in project.jobs()
                  if j.type == "homo_reconstruct" and j.runs]
    rows = json.loads(cli(api.instance.home, "--json", "usage", "--project", project.uid, "--by", "type",
                          check=True).stdout)
    mine = next(r for r in rows if r["type"] == "homo_reconstruct")
    assert mine["scheduler_hours"] == pytest.approx(sum(r.scheduler["elapsed_s"] for r in everything) / 3600)
    assert mine["billed_hours"] == pytest.approx(
        sum(r.scheduler["elapsed_s"] * r.scheduler["billing"] for r in everything) / 3600)
    held = run.resources.cpus * (run.ended_at - run.started_at) / 3600
    assert 0 < held <= mine["cpu_hours_held"]
    elapsed = scheduler_elapsed_s(folder, run.cluster_job_id)
    assert abs((run.ended_at - run.started_at) - elapsed) < 3.0, (run, elapsed)  # 1 s resolution, plus start-up
    table = cli(api.instance.home, "usage", "--csv", "--lane", "multi", check=True).stdout
    parsed = list(csv.DictReader(io.StringIO(table)))
    assert {r["type"] for r in parsed} >= {"homo_reconstruct"} and all(r["lane"] == "multi" for r in parsed)
    shown = cli(api.instance.home, "job", "show", project.uid, job.uid, check=True).stdout
    assert f"cluster job {run.cluster_job_id} on node[1-2]" in shown and "completed" in shown
    assert f"scheduler: {sched['elapsed_s']:.0f} s elapsed" in shown


def wait_for_file(path: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


def wait_status(job, wanted: set[JobStatus], timeout_s: float = 180) -> JobStatus:
    deadline = time.monotonic() + timeout_s
    while job.status not in wanted:
        assert time.monotonic() < deadline, (job.status, job.model.errors_run)
        time.sleep(0.2)
    return job.status


SLOW = {"batch_size": 4, "checkpoint_every_s": 0.5}


def test_a_dead_node_requeues_the_job_which_resumes_until_the_cap(two_nodes, tmp_path):
    """node2 dies mid-run: NODE_FAIL, queued again by itself, resumed from the checkpoints
    once the node is back; dying again past max_requeues (1 here) fails the job with
    the cap named; a user's resume then completes it with the uninterrupted run's map."""
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5,
                   heartbeat_timeout_s=300)
    (api.instance.paths.site_configs / "multi.yaml").write_text(
        LANE.format(ssd=two_nodes / "local-ssd", max_requeues=1, stop_warning_s=30))
    master = ThreadMaster(api).start()
    try:
        project = api.create_project("nodefail")
        sim = simulate(project, n=4000, box=40)
        whole = reconstruct(project, sim, nodes=2, **SLOW)
        assert whole.wait(600) == JobStatus.COMPLETED, whole.model.errors_run
        rec = reconstruct(project, sim, nodes=2, **SLOW)
        for attempt in (1, 2):
            wait_for_file(rec.dir / "checkpoints" / "rank003.h5")  # node2's last rank has saved once
            assert dev_slurm("kill-node", str(two_nodes), "node2").returncode == 0
            t0 = time.monotonic()
            if attempt == 1:
                wait_status(rec, {JobStatus.QUEUED, JobStatus.LAUNCHED})
                print(f"requeued {time.monotonic() - t0:.1f} s after the node died")
                (rec.dir / "checkpoints" / "rank003.h5").unlink()  # so the next wait sees a new save
                assert dev_slurm("start-node", str(two_nodes), "node2").returncode == 0
            else:
                assert wait_status(rec, {JobStatus.FAILED, JobStatus.COMPLETED}) == JobStatus.FAILED
                assert dev_slurm("start-node", str(two_nodes), "node2").returncode == 0
        m = rec.model
        assert [r.state for r in m.runs] == ["requeued", "failed"], m.runs
        assert all(r.verdict and r.verdict.startswith("NODE_FAIL") for r in m.runs), m.runs
        assert len({r.cluster_job_id for r in m.runs}) == 2
        assert "a node of the job failed" in m.runs[0].reason and "1 of 1" in m.runs[0].reason
        assert "not queued again" in m.errors_run[-1].message and "allows 1" in m.errors_run[-1].message
        rec.resume()
        assert rec.wait(600) == JobStatus.COMPLETED, rec.model.errors_run
        assert any("resumed from checkpoint" in line for line in rec.log_lines())
        a, b = volume(project, whole), volume(project, rec)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
        shown = api.job_show(project.uid, rec.uid) if hasattr(api, "job_show") else None
        assert shown is None or "NODE_FAIL" in str(shown)
    finally:
        master.stop()
        dev_slurm("start-node", str(two_nodes), "node2")


def test_a_job_longer_than_its_time_limit_completes_over_resubmissions(multi):
    """A 1-minute limit and 80 s of work: at SLURM's warning (--signal=B:USR2@N) the job
    checkpoints and stops, cryohpc submits it again (a new cluster job id each time) and it
    goes on from its count until done; every step was done once."""
    api, project, folder = multi
    (api.instance.paths.site_configs / "multi.yaml").write_text(
        LANE.format(ssd=folder / "local-ssd", max_requeues=10, stop_warning_s=20))
    job = project.create_job("test_steps", params={"steps": 40, "step_s": 2.0})
    job.queue(lane="multi", custom_vars={"time_limit": "1"})
    t0 = time.monotonic()
    assert job.wait(900) == JobStatus.COMPLETED, job.model.errors_run
    m = job.model
    print(f"completed after {len(m.runs)} runs in {time.monotonic() - t0:.0f} s")
    assert len(m.runs) >= 2 and m.runs[-1].state == "completed", m.runs
    assert all(r.state == "requeued" and "before its time limit" in r.reason for r in m.runs[:-1]), m.runs
    ids = [r.cluster_job_id for r in m.runs]
    assert len(set(ids)) == len(ids)
    assert "#SBATCH --time=1" in (job.dir / "submit.sh").read_text()
    steps = [line.split() for line in (job.dir / "steps.log").read_text().splitlines()]
    assert [int(n) for _, n in steps] == list(range(1, 41))  # each step once, in order, over the runs
    assert sorted({run for run, _ in steps}, key=int) == ids
    output = (job.dir / "job.log").read_text()  # every submission appends to it
    assert output.count("stopped to be requeued") == len(m.runs) - 1, output


def test_a_reconstruction_asked_to_stop_saves_and_resumes_to_the_same_map(tmp_path):
    """The stop request, where a lane does not requeue (local): the job fails saying so,
    and a resume finishes it from the checkpoints with the map of an uninterrupted run."""
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5)
    master = ThreadMaster(api).start()
    try:
        project = api.create_project("stop")
        sim = simulate(project, n=6000, box=48)
        whole = project.create_job("homo_reconstruct", params={"compute_num_ranks": 2})
        whole.connect("particles", sim.uid, "particles")
        whole.queue()
        assert whole.wait(300) == JobStatus.COMPLETED, whole.model.errors_run
        rec = project.create_job("homo_reconstruct", params={"compute_num_ranks": 2, "batch_size": 1,
                                                            "checkpoint_every_s": 0.2})
        rec.connect("particles", sim.uid, "particles")
        rec.queue()
        wait_for_file(rec.dir / "checkpoints" / "rank001.h5")
        (rec.dir / "stop_request").touch()
        assert rec.wait(300) == JobStatus.FAILED
        assert "does not requeue" in rec.model.errors_run[-1].message, rec.model.errors_run
        rec.resume()
        assert rec.wait(300) == JobStatus.COMPLETED, rec.model.errors_run
        assert any("resumed from checkpoint" in line for line in rec.log_lines())
        a, b = volume(project, whole), volume(project, rec)
        assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    finally:
        master.stop()


def test_a_preempted_job_is_queued_again_and_goes_on(multi):
    """A job of the preemptible partition loses its node to a higher-tier partition's job
    (PreemptMode=REQUEUE; cryohpc submits --no-requeue, so SLURM ends it PREEMPTED): cryohpc
    names preemption, not failure or timeout, submits it again, and it goes on from its count."""
    api, project, _ = multi
    job = project.create_job("test_steps", params={"steps": 12, "step_s": 1.0})
    job.queue(lane="multi")
    wait_for_file(job.dir / "steps.log")
    urgent = subprocess.run(["sbatch", "--parsable", "-o", "/dev/null", "-p", "urgent", "-N2", "--exclusive", "--wrap", "sleep 3"],
                            capture_output=True, text=True, timeout=30)
    assert urgent.returncode == 0, urgent.stderr
    assert job.wait(300) == JobStatus.COMPLETED, job.model.errors_run
    m = job.model
    assert [r.state for r in m.runs] == ["requeued", "completed"], m.runs
    assert m.runs[0].verdict.startswith("PREEMPTED") and "preempted" in m.runs[0].reason, m.runs[0]
    steps = [line.split() for line in (job.dir / "steps.log").read_text().splitlines()]
    assert [int(n) for _, n in steps] == list(range(1, 13))
    assert len({run for run, _ in steps}) == 2
    output = (job.dir / "job.log").read_text()  # SIGTERM at preemption: it saved and stopped itself
    assert "stopped to be requeued" in output, output


def test_ranks_that_would_share_a_gpu_stop_at_once_naming_the_node(multi):
    api, project, _ = multi
    sim = simulate(project, n=400, box=24)
    rec = reconstruct(project, sim, nodes=2, gpus=2)  # 2 ranks per node, 1 GPU per node
    assert rec.wait(300) == JobStatus.FAILED
    message = rec.model.errors_run[-1].message
    assert "2 ranks run on node" in message and "1 GPU(s)" in message and "would share a GPU" in message, message


def test_node_counts_that_cannot_run_are_refused_at_queue_time(tmp_path):
    from cryohpc.errors import BuildError

    api = Api.init(tmp_path / "home", tmp_path / "projects")
    (api.instance.paths.site_configs / "multi.yaml").write_text(LANE.format(ssd="/scratch", max_requeues=3,
                                                                            stop_warning_s=60))
    project = api.create_project("refusals")
    sim = project.create_job("simulate_particles", params={"n_particles": 10, "box": 16})
    for lane, params, words in (("local", {"compute_num_nodes": 2, "compute_num_ranks": 2},
                                 "runs a job on one machine"),
                                ("multi", {"compute_num_nodes": 2, "compute_num_ranks": 3}, "do not divide evenly"),
                                ("multi", {"compute_num_nodes": 2, "compute_num_ranks": 2, "compute_num_gpus": 3},
                                 "do not divide evenly")):
        rec = project.create_job("homo_reconstruct", params=params)
        rec.connect("particles", sim.uid, "particles")
        with pytest.raises(BuildError, match=words):
            rec.queue(lane=lane)
        assert rec.model.status == JobStatus.BUILDING


@pytest.mark.parametrize("env, expected", [
    ({"CUDA_VISIBLE_DEVICES": "0,1", "SLURM_STEP_GPUS": "1,3"}, "1,3"),  # the node's own step wins
    ({"CUDA_VISIBLE_DEVICES": "2"}, "2"),
    ({"SLURM_STEP_GPUS": "", "CUDA_VISIBLE_DEVICES": "0,1"}, "0,1"),
    ({}, None),
])
def test_a_rank_takes_the_gpus_its_node_gave(env, expected):
    from cryohpc.jobrun.gpus import place_rank
    from cryohpc.jobrun.mpi import SingleRank

    placed = place_rank(SingleRank(), 1, env)
    assert env.get("CUDA_VISIBLE_DEVICES") == expected
    assert placed.gpu == (expected.split(",")[0] if expected else None) and placed.local_size == 1



class OneNodeRanks:
    """Rank ``rank`` of ``size`` ranks, all on one node (what Split_type(SHARED) says)."""

    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size

    def Split_type(self, _kind):  # noqa: N802
        return self

    def Free(self):  # noqa: N802
        pass


@pytest.mark.parametrize("ranks, gpus", [(2, "3"), (3, "1,4"), (5, "0,2")])
def test_ranks_outnumbering_a_nodes_gpus_stop_unless_the_job_lets_them_share(ranks, gpus):
    from cryohpc.errors import UserError
    from cryohpc.jobrun.gpus import place_rank

    with pytest.raises(UserError, match=f"{ranks} ranks run on .* gave it {len(gpus.split(','))} GPU.*compute_share_gpus"):
        place_rank(OneNodeRanks(0, ranks), 1, {"SLURM_STEP_GPUS": gpus})
    ids = gpus.split(",")
    placed = [place_rank(OneNodeRanks(r, ranks), 1, {"SLURM_STEP_GPUS": gpus}, share=True) for r in range(ranks)]
    assert [p.gpu for p in placed] == [ids[r % len(ids)] for r in range(ranks)]  # in turn, every GPU used
    assert {p.local_size for p in placed} == {ranks}
    # as many GPUs as ranks (or more): each rank its own, share or not
    own = [place_rank(OneNodeRanks(r, ranks), 1, {"CUDA_VISIBLE_DEVICES": ",".join(map(str, range(ranks)))})
           for r in range(ranks)]
    assert [p.gpu for p in own] == [str(r) for r in range(ranks)]

def test_a_killed_job_that_checkpoints_saves_at_sigterm_and_a_resume_goes_on(tmp_path):
    """SIGTERM (a kill here; a scheduler's preemption or cancel on a cluster) asks a job that
    looks for stops to save and stop within the grace, before any SIGKILL."""
    api = Api.init(tmp_path / "home", tmp_path / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5)
    master = ThreadMaster(api).start()
    try:
        job = api.create_project("kill").create_job("test_steps", params={"steps": 8, "step_s": 0.5})
        job.queue()
        wait_for_file(job.dir / "steps.log")
        job.kill()
        assert job.model.status == JobStatus.KILLED
        deadline = time.monotonic() + 30
        while "stopped" not in (job.dir / "events.jsonl").read_text():
            assert time.monotonic() < deadline, (job.dir / "events.jsonl").read_text()
            time.sleep(0.2)
        job.resume()
        assert job.wait(120) == JobStatus.COMPLETED, job.model.errors_run
        steps = [line.split() for line in (job.dir / "steps.log").read_text().splitlines()]
        assert [int(n) for _, n in steps] == list(range(1, 9)) and len({run for run, _ in steps}) == 2
    finally:
        master.stop()
