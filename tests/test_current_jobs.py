"""The Current Jobs view across projects, and job list's filters and elapsed time."""

from __future__ import annotations

import json
import re

from conftest import cli, wait_for

from cryohpc.status import JobStatus


def test_current_jobs_groups_by_lane_counts_and_names_targets(api, project, master):
    (api.instance.paths.site_configs / "lanes.yaml").write_text(
        "lanes:\n  - {name: local, type: node, kind: local, cpus: 1, ram_gb: 4, gpus: []}\n")
    other = api.create_project("other")
    running = project.create_job("test_sleep", params={"seconds": 60})
    running.queue()
    wait_for(lambda: running.status == JobStatus.RUNNING, 60, "the first job to run")
    waiting = project.create_job("test_sleep", params={"seconds": 1})
    waiting.queue(priority=3)
    elsewhere = other.create_job("test_sleep", params={"seconds": 1})
    elsewhere.queue()
    done = other.create_job("test_sleep")  # building: not in progress, not shown
    home = api.instance.home
    try:
        out = cli(home, "jobs", "current", check=True).stdout
        assert "lane local: 1 active, 2 queued (3 of 3 shown)" in out
        assert f"{project.uid} {running.uid}" in out and f"{other.uid} {elsewhere.uid}" in out
        assert f"{other.uid} {done.uid}" not in out
        assert "queued (waiting_resources)" in out and "running" in out
        assert f"active targets: local/{running.model.run.host}: {project.uid} {running.uid}" in out
        lines = out.splitlines()
        assert lines.index(next(x for x in lines if x.startswith(f"{project.uid} {running.uid}"))) < \
            lines.index(next(x for x in lines if x.startswith(f"{project.uid} {waiting.uid}")))
        assert "(1 of 3 shown)" in cli(home, "jobs", "current", "--active", check=True).stdout
        assert "(2 of 3 shown)" in cli(home, "jobs", "current", "--queued", check=True).stdout
        assert "no jobs in progress" in cli(home, "jobs", "current", "--lane", "nowhere", check=True).stdout
        shown = json.loads(cli(home, "--json", "jobs", "current", check=True).stdout)
        assert sorted((j["project_uid"], j["uid"]) for j in shown) == sorted(
            [(project.uid, running.uid), (project.uid, waiting.uid), (other.uid, elsewhere.uid)])
        watched = cli(home, "jobs", "current", "--watch", "--interval", "0.2", "--count", "2", check=True).stdout
        assert watched.count("Every 0.2s: cryohpc jobs current") == 2  # redrawn twice
        assert "\x1b" not in watched  # no screen codes into a pipe (a terminal gets them)
    finally:
        running.kill()


def test_job_list_filters_and_elapsed(api, project):
    ws = project.create_workspace("second")
    a = project.create_job("test_sleep", workspace=ws.uid)
    b = project.create_job("test_exit")
    with api.store.write() as tx:
        job = tx.get_job(project.uid, b.uid)
        job.tags = ["keep"]
        tx.put_job(job)
    home = api.instance.home

    def uids(*args: str) -> list[str]:
        return [j["uid"] for j in json.loads(cli(home, "--json", "job", "list", project.uid, *args, check=True).stdout)]

    assert uids("--workspace", ws.uid) == [a.uid]
    assert uids("--tag", "keep") == [b.uid]
    assert uids("--type", "test_exit") == [b.uid]
    assert uids("--lane", "local") == []
    table = cli(home, "job", "list", project.uid, check=True).stdout
    assert "ELAPSED" in table.splitlines()[0]
    assert all(re.search(r"  \d+s  ", line) for line in table.splitlines()[1:])  # seconds in their status
    bad = cli(home, "job", "list", project.uid, "--workspace", "W99")
    assert bad.returncode == 2 and "no workspace W99" in bad.stderr
