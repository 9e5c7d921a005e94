"""What jobs cost: the scheduler's accounting parsed (sacct), run histories summed."""

from __future__ import annotations

import pytest
from conftest import cli
from hypothesis import given
from hypothesis import strategies as st

from cryohpc.lanes.schedulers import parse_sacct_usage
from cryohpc.model import Job, Resources, RunRecord
from cryohpc.usage import UsageFilter, summarize


def sacct_duration(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    frac = f".{int(round((seconds - whole) * 1000)) % 1000:03d}"
    clock = f"{h:02d}:{m:02d}:{s:02d}" if h or days else f"{m:02d}:{s:02d}"
    return (f"{days}-" if days else "") + clock + frac


steps = st.lists(st.tuples(st.sampled_from(["batch", "extern", "0", "1"]), st.integers(0, 1 << 40),
                           st.sampled_from(["K", "M", "G", ""])), max_size=4, unique_by=lambda s: s[0])


@given(job_id=st.integers(1, 10**9), state=st.sampled_from(["COMPLETED", "FAILED", "TIMEOUT", "NODE_FAIL",
                                                            "CANCELLED by 0", "PREEMPTED", "RUNNING", "PENDING"]),
       elapsed=st.integers(0, 10**7), cpu=st.floats(0, 10**7, allow_nan=False), billing=st.integers(0, 512),
       steps=steps)
def test_sacct_rows_give_the_allocation_figures_and_the_largest_step(job_id, state, elapsed, cpu, billing, steps):
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "": 1}
    rows = [f"{job_id}|{state}|{elapsed}|{sacct_duration(cpu)}||billing={billing},cpu=4,node=2"]
    rows += [f"{job_id}.{name}|{state}|{elapsed}|00:01.000|{size}{u}|cpu=1" for name, size, u in steps]
    parsed = parse_sacct_usage("\n".join(rows) + "\n")
    if state in ("RUNNING", "PENDING"):
        assert parsed == {}  # not ended: asked again later
        return
    got = parsed[str(job_id)]
    assert got["state"] == state.split()[0] and got["elapsed_s"] == elapsed and got["billing"] == billing
    assert got["cpu_s"] == pytest.approx(int(cpu) + round((cpu - int(cpu)) * 1000) % 1000 / 1000, abs=1e-6)
    assert got["max_rss_bytes"] == max((size * unit[u] for _, size, u in steps), default=0)


@given(st.text(alphabet="|abc123.\n ", max_size=40))
def test_a_sacct_answer_not_in_form_is_refused_or_understood(text):
    try:
        parse_sacct_usage(text)
    except ValueError as err:
        assert "sacct row" in str(err)


def job(uid: str, project: str, lane: str, user: str, *runs: tuple[float, float, int, int, list[float]]) -> Job:
    return Job(uid=uid, project_uid=project, type="homo_reconstruct", job_dir=uid, created_by=user, runs=[
        RunRecord(number=i + 1, lane=lane, launched_at=start - 1, started_at=start, ended_at=end, state="completed",
                  queued_by=user, resources=Resources(cpus=cpus, gpus=gpus),
                  usage=[{"rank": r, "cpu_s": c, "gpu_s": (end - start) if gpus else 0.0} for r, c in enumerate(cpu)],
                  scheduler={"elapsed_s": end - start, "cpu_s": sum(cpu), "billing": cpus} if lane == "slurm" else None)
        for i, (start, end, cpus, gpus, cpu) in enumerate(runs)])


def test_usage_sums_runs_by_key_and_filters_them():
    jobs = [job("J1", "P1", "slurm", "alice", (1000, 4600, 4, 2, [3000, 3000]), (5000, 5360, 4, 2, [300, 300])),
            job("J2", "P1", "local", "bob", (2000, 2360, 2, 0, [100])),
            job("J3", "P2", "slurm", "alice", (3000, 3036, 8, 0, [36]))]
    rows = summarize(jobs, UsageFilter(), ("user",))
    alice = next(r for r in rows if r["user"] == "alice")
    assert alice["jobs"] == 2 and alice["runs"] == 3
    assert alice["cpu_hours"] == pytest.approx((6000 + 600 + 36) / 3600)
    assert alice["cpu_hours_held"] == pytest.approx((3600 * 4 + 360 * 4 + 36 * 8) / 3600)
    assert alice["gpu_hours_held"] == pytest.approx((3600 + 360) * 2 / 3600)
    assert alice["gpu_hours"] == pytest.approx(2 * (3600 + 360) / 3600)  # two ranks, each with a GPU
    assert alice["billed_hours"] == pytest.approx((3600 * 4 + 360 * 4 + 36 * 8) / 3600)
    assert [r["user"] for r in rows] == ["alice", "bob"]
    assert summarize(jobs, UsageFilter(since=4000), ("project",)) == [
        {**summarize([jobs[0]], UsageFilter(since=4000), ("project",))[0]}]
    assert summarize(jobs, UsageFilter(lane="local"), ("lane", "type"))[0]["runs"] == 1
    assert summarize(jobs, UsageFilter(project="P2", user="bob"), ("user",)) == []
    with pytest.raises(ValueError, match="cannot group by colour"):
        summarize(jobs, UsageFilter(), ("colour",))


def test_usage_from_the_command_line_refuses_bad_input_in_one_line(tmp_path):
    from cryohpc.api import Api

    api = Api.init(tmp_path / "home", tmp_path / "projects")
    bad = cli(api.instance.home, "usage", "--by", "colour")
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:") and "Traceback" not in bad.stderr
    bad = cli(api.instance.home, "usage", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since 'last tuesday'" in bad.stderr
    empty = cli(api.instance.home, "usage", check=True)
    assert "no runs match" in empty.stdout


PSS_SCENARIO = r"""
import json, mmap, os, subprocess, sys
from pathlib import Path
from cryohpc.jobrun.usage import pss_mb

size = 64 * 2**20
path = Path("/dev/shm") / f"cryohpc-test-pss-{os.getpid()}"  # shared memory, as the node's accumulators
with open(path, "w+b") as f:
    f.truncate(size)
    shared = mmap.mmap(f.fileno(), size)
    peer_file = os.dup(f.fileno())
os.set_inheritable(peer_file, True)
path.unlink()
before = pss_mb()
for i in range(0, size, 4096):
    shared[i] = 1  # every page touched here
out = {"alone": pss_mb() - before}
peer = ("import mmap, sys; m = mmap.mmap(int(sys.argv[1]), 0); "
        "sys.argv[2] == 'touch' and sum(m[i] for i in range(0, len(m), 4096)); "
        "print('ready', flush=True); sys.stdin.read()")
for touch in ("no", "touch"):  # the same process, touching the pages or not
    base = pss_mb()
    proc = subprocess.Popen([sys.executable, "-c", peer, str(peer_file), touch], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, pass_fds=(peer_file,))
    assert proc.stdout.readline() == b"ready\n"
    out[touch] = base - pss_mb()
    proc.communicate(b"")
print(json.dumps(out))
"""


def test_proportional_share_counts_a_page_shared_by_two_processes_half():
    import json
    import subprocess
    import sys

    # in a process of its own: nothing else in it allocates meanwhile
    out = json.loads(subprocess.run([sys.executable, "-c", PSS_SCENARIO], capture_output=True, text=True,
                                    timeout=120, check=True).stdout)
    assert 60 < out["alone"] < 70  # every page once
    assert 28 < out["touch"] - out["no"] < 36  # half of each page the peer shares
