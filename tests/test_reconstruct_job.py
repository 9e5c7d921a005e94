"""simulate_particles -> homo_reconstruct (MPI) -> validate_fsc, through the master."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ThreadMaster

from cryohpc.compute.fsc import fsc
from cryohpc.compute.io_mrc import read_volume
from cryohpc.procs import process_start_ticks
from cryohpc.status import JobStatus


def done(job, timeout_s: float = 180) -> None:
    status = job.wait(timeout_s)
    assert status == JobStatus.COMPLETED, [e.message for e in job.model.errors_run]


@pytest.fixture(scope="module")
def sim_env(tmp_path_factory):
    """One instance with simulated particles shared by the tests of this module."""
    from cryohpc.api import Api

    root = tmp_path_factory.mktemp("recon")
    api = Api.init(root / "home", root / "projects", poll_interval_s=0.1, heartbeat_interval_s=0.5)
    master = ThreadMaster(api).start()
    project = api.create_project("recon")
    sim = project.create_job("simulate_particles", params={"n_particles": 1200, "box": 32, "psize_A": 2.0,
                                                           "snr": 2.0, "particles_per_stack": 400, "seed": 11})
    sim.queue()
    done(sim)
    yield api, project, sim
    master.stop()


def reconstruct(project, source, group="particles", **params):
    job = project.create_job("homo_reconstruct", params=params)
    job.connect("particles", source.uid, group)
    job.queue()
    return job


def volume(project, job, prefix="map"):
    ds = job.load_output("volume")
    return read_volume(project.dir / ds.strings(f"{prefix}/path")[0])[0]


def test_simulation_writes_stacks_and_truth(sim_env):
    api, project, sim = sim_env
    ds = sim.load_output("particles")
    assert len(ds) == 1200 and set(ds.prefixes()) == {"blob", "ctf", "alignments3D"}
    assert len(set(ds.strings("blob/path"))) == 3
    assert sorted(np.bincount(ds["alignments3D/split"]).tolist()) == [600, 600]
    assert ds["ctf/df1_A"].min() >= 10000 - 150 and ds["ctf/df1_A"].max() <= 25000 + 150


def test_one_two_and_three_ranks_give_the_same_map_close_to_truth(sim_env):
    """Two and three ranks: a shared-memory sum whose half sets end on ranks 0 and 1,
    which finish the half maps side by side (a third rank only gives its grid back)."""
    api, project, sim = sim_env
    (api.instance.paths.site_configs / "shared.yaml").write_text(
        "lanes:\n  - {name: shared, type: node, kind: local, oversubscribe: true}\n")  # 3 ranks on 2 cores
    one = reconstruct(project, sim, compute_num_ranks=1)
    done(one)
    for ranks in (2, 3):
        many = project.create_job("homo_reconstruct", params={"compute_num_ranks": ranks})
        many.connect("particles", sim.uid, "particles")
        many.queue(lane="shared")
        done(many)
        assert many.model.run.resources.mpi_ranks == ranks
        assert len(many.model.output("volume").summary["peak_rss_mb"]) == ranks
        for prefix in ("map", "map_half_A", "map_half_B"):
            a, b = volume(project, one, prefix), volume(project, many, prefix)
            assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max(), (ranks, prefix)
    a = volume(project, one)
    truth = read_volume(project.dir / sim.load_output("true_volume").strings("map/path")[0])[0]
    c = fsc(a, truth, 2.0)
    assert c.resolution_A(0.5) < 5.0  # Nyquist 4 Å, SNR 2
    summary = one.model.output("volume").summary
    assert summary["fsc_0143_A"] < 6.0 and summary["num_particles"] == 1200
    for suffix in ("map.mrc", "map_half_A.mrc", "map_half_B.mrc", "fsc.svg", "fsc.xml"):
        assert (one.dir / f"{one.uid}_{suffix}").is_file()
    assert "<coordinate><x>" in (one.dir / f"{one.uid}_fsc.xml").read_text()
    # particles pass through untouched
    passed = one.load_output("particles")
    assert len(passed) == 1200 and "alignments3D/pose" in passed and "ctf/df1_A" in passed


def test_validate_against_truth_and_half_maps(sim_env):
    api, project, sim = sim_env
    rec = reconstruct(project, sim)
    done(rec)
    vs_truth = project.create_job("validate_fsc")
    vs_truth.connect("volume", rec.uid, "volume")
    vs_truth.connect("reference", sim.uid, "true_volume")
    halves = project.create_job("validate_fsc")
    halves.connect("volume", rec.uid, "volume")
    vs_truth.queue()
    halves.queue()
    done(vs_truth)
    done(halves)
    t, h = vs_truth.model.output("volume").summary, halves.model.output("volume").summary
    assert t["compared"] == "map vs reference" and h["compared"] == "half maps"
    assert h["fsc_0143_A"] == pytest.approx(rec.model.output("volume").summary["fsc_0143_A"], rel=1e-6)
    assert t["fsc_05_A"] < 5.0
    assert (vs_truth.dir / f"{vs_truth.uid}_fsc.svg").stat().st_size > 1000


def small_simulation(project, **params):
    job = project.create_job("simulate_particles", params={"n_particles": 40, "box": 16, "snr": 0,
                                                           "particles_per_stack": 20, **params})
    job.queue()
    done(job)
    return job, [project.dir / p for p in sorted(set(job.load_output("particles").strings("blob/path")))]


def fails_naming(project, source, *needles, group="particles"):
    rec = reconstruct(project, source, group)
    assert rec.wait(120) == JobStatus.FAILED
    msg = rec.model.errors_run[-1].message
    assert all(n in msg for n in needles), msg
    assert not any(r.metafiles for g in rec.model.outputs for r in g.results)  # nothing registered


def test_missing_stack_fails_naming_blob_path(sim_env):
    api, project, sim = sim_env
    other, stacks = small_simulation(project)
    stacks[1].unlink()
    fails_naming(project, other, "blob/path", "points nowhere", stacks[1].name)


def test_truncated_stack_fails_naming_the_file(sim_env):
    api, project, sim = sim_env
    other, stacks = small_simulation(project, seed=1)
    data = stacks[0].read_bytes()
    stacks[0].write_bytes(data[: len(data) // 2])
    fails_naming(project, other, str(stacks[0]), "corrupt or truncated MRC file")


def test_particles_without_poses_fail_naming_file_and_field(sim_env, tmp_path):
    api, project, sim = sim_env
    ds = sim.load_output("particles")
    stack_dir = project.dir / Path(ds.strings("blob/path")[0]).parent
    ds.drop_fields(["alignments3D/pose"]).save(tmp_path / "no_pose.cs")
    imp = project.create_job("import_particles", params={"particle_meta_path": str(tmp_path / "no_pose.cs"),
                                                         "particle_blob_path": str(stack_dir)})
    imp.queue()
    done(imp)
    fails_naming(project, imp, "alignments3D/pose", f"{imp.uid}_imported_particles.cs", group="imported_particles")


def test_killed_reconstruction_resumes_from_its_checkpoint(sim_env):
    api, project, sim = sim_env
    reference = reconstruct(project, sim, batch_size=10)
    done(reference)
    job = reconstruct(project, sim, batch_size=10, checkpoint_every_s=0.05)
    ckpt = job.dir / "checkpoints" / "rank000.h5"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline and not job.status.final:
        time.sleep(0.02)
    assert ckpt.exists(), "no checkpoint was written"
    job.kill()
    assert job.status == JobStatus.KILLED
    job.resume()
    done(job)
    log = "\n".join(job.log_lines())
    assert "resumed from checkpoint" in log
    assert (job.dir / "events.1.jsonl").exists()  # the killed run's log is kept
    a, b = volume(project, reference), volume(project, job)
    assert np.allclose(a, b, atol=1e-4 * np.abs(a).max())


def test_failing_rank_fails_the_job_and_leaves_no_rank(sim_env):
    api, project, sim = sim_env
    job = project.create_job("test_mpi_rank_fails")
    job.queue()
    assert job.wait(60) == JobStatus.FAILED
    assert "rank 1 gives up" in job.model.errors_run[-1].message
    assert "MPI rank 1 of 2" in job.model.errors_run[-1].message
    pids = [int(p.read_text()) for p in job.dir.glob("pid.rank*")]
    assert len(pids) == 2
    deadline = time.monotonic() + 20
    while any(process_start_ticks(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(process_start_ticks(p) for p in pids)


def test_launcher_that_starts_separate_programs_is_caught(sim_env, tmp_path):
    api, project, sim = sim_env
    fake = tmp_path / "fake-mpiexec"
    # fault injection: a launcher that runs the command twice as independent programs
    fake.write_text('#!/bin/sh\nshift 2\n"$@" &\n"$@"\nwait\n')
    fake.chmod(0o755)
    (api.instance.paths.site_configs / "broken-mpi.yaml").write_text(
        f"lanes:\n  - name: broken-mpi\n    mpiexec: {fake}\n")
    job = project.create_job("homo_reconstruct", params={"compute_num_ranks": 2})
    job.connect("particles", sim.uid, "particles")
    job.queue(lane="broken-mpi")
    assert job.wait(120) == JobStatus.FAILED
    assert "COMM_WORLD has 1" in job.model.errors_run[-1].message
    (api.instance.paths.site_configs / "broken-mpi.yaml").unlink()


def test_progress_is_reported(sim_env):
    api, project, sim = sim_env
    job = reconstruct(project, sim, batch_size=100)
    done(job)
    progress = [e for e in job.events() if e.type == "progress"]
    assert progress and progress[-1].done == progress[-1].total == 1200
    assert os.path.getsize(job.dir / "job.log") > 0


def test_reconstruction_through_the_ssd_cache_gives_the_same_map(sim_env, tmp_path, monkeypatch):
    api, project, sim = sim_env
    monkeypatch.setenv("CRYOHPC_TEST_SSD", str(tmp_path / "ssd"))  # resolved by the worker at run time
    (api.instance.paths.site_configs / "cached.yaml").write_text(
        "lanes:\n  - name: cached\n    cache_path: $CRYOHPC_TEST_SSD/node1\n    cache_reserve_mb: 0\n")
    try:
        plain = reconstruct(project, sim, compute_use_ssd=False)
        done(plain)
        cold = project.create_job("homo_reconstruct")
        cold.connect("particles", sim.uid, "particles")
        cold.queue(lane="cached")
        done(cold)
        warm = project.create_job("homo_reconstruct", params={"compute_num_ranks": 2})
        warm.connect("particles", sim.uid, "particles")
        warm.queue(lane="cached")
        done(warm)
    finally:
        (api.instance.paths.site_configs / "cached.yaml").unlink()
    assert cold.model.run.cache_path_used == str(tmp_path / "ssd" / "node1" / "cryohpc-cache")
    assert plain.model.run.cache_path_used is None
    cold_log, warm_log = "\n".join(cold.log_lines()), "\n".join(warm.log_lines())
    assert "3 file(s) copied" in cold_log and "0 file(s) copied" in warm_log  # the second run found them
    assert np.array_equal(volume(project, plain), volume(project, cold))
    assert np.allclose(volume(project, cold), volume(project, warm), atol=1e-5 * np.abs(volume(project, cold)).max())


def test_cache_particles_warms_the_cache_and_the_cli_shows_it(sim_env, tmp_path, monkeypatch):
    from conftest import cli

    api, project = sim_env[0], sim_env[1]
    sim = sim_env[2]
    monkeypatch.setenv("CRYOHPC_TEST_SSD", str(tmp_path / "ssd"))
    (api.instance.paths.site_configs / "warm.yaml").write_text(
        "lanes:\n  - name: warm\n    cache_path: $CRYOHPC_TEST_SSD\n    cache_reserve_mb: 0\n")
    try:
        job = project.create_job("cache_particles")
        job.connect("particles", sim.uid, "particles")
        job.queue(lane="warm")
        done(job)
        assert job.load_output("particles")["uid"].size == 1200  # passed through
        status = cli(api.instance.home, "cache", "status", "--lane", "warm", check=True).stdout
        assert "3 file(s)" in status and "stack_0000.mrcs" in status
        cleared = cli(api.instance.home, "cache", "clear", "--lane", "warm", check=True).stdout
        assert "3 file(s) removed" in cleared
        assert "0 file(s)" in cli(api.instance.home, "cache", "status", "--lane", "warm", check=True).stdout
        nocache = project.create_job("cache_particles")
        nocache.connect("particles", sim.uid, "particles")
        nocache.queue()
        assert nocache.wait(60) == JobStatus.FAILED
        assert "no SSD cache configured" in nocache.model.errors_run[-1].message
    finally:
        (api.instance.paths.site_configs / "warm.yaml").unlink()


def test_small_subset_is_cached_compactly_with_the_same_map(sim_env, tmp_path, monkeypatch):
    api, project, sim = sim_env
    monkeypatch.setenv("CRYOHPC_TEST_SSD", str(tmp_path / "ssd"))
    (api.instance.paths.site_configs / "subset.yaml").write_text(
        "lanes:\n  - name: subset-ssd\n    cache_path: $CRYOHPC_TEST_SSD\n    cache_reserve_mb: 0\n")
    try:
        few = project.create_job("subset_particles", params={"max_items": 120, "random_seed": 3})
        few.connect("particles", sim.uid, "particles")
        few.queue()
        done(few)
        project.set_default_params(compute_use_ssd=False)  # project default: no cache...
        plain = project.create_job("homo_reconstruct")
        plain.connect("particles", few.uid, "particles")
        plain.queue(lane="subset-ssd")
        done(plain)
        assert "SSD cache" not in "\n".join(plain.log_lines())
        project.set_default_params(compute_use_ssd=None)
        cached = project.create_job("homo_reconstruct")
        cached.connect("particles", few.uid, "particles")
        cached.queue(lane="subset-ssd")
        done(cached)
    finally:
        (api.instance.paths.site_configs / "subset.yaml").unlink()
    log = "\n".join(cached.log_lines())
    assert "3 as compact subsets" in log
    stacks = sum((project.dir / p).stat().st_size for p in set(sim.load_output("particles").strings("blob/path")))
    cache_bytes = sum(f.stat().st_size for f in (tmp_path / "ssd" / "cryohpc-cache").glob("*.dat"))
    assert cache_bytes < stacks / 5  # ~10% of the images, not the whole stacks
    assert np.array_equal(volume(project, plain), volume(project, cached))


def test_job_maps_equal_the_reference_path(sim_env):
    """Every optimisation of the job (numba kernels, shared-memory sums across ranks, maps
    finished in parallel, threaded FFTs) keeps its maps within 1e-5 of the maximum of the
    reference path: vectorised insertion and sliced gridding iterations in one process."""
    from cryohpc.compute.geometry import rotvec_to_matrix
    from cryohpc.compute.io_mrc import read_images
    from cryohpc.compute.reconstruct import CtfParams, Reconstructor

    api, project, sim = sim_env
    job = reconstruct(project, sim, compute_num_ranks=2)
    done(job)
    ds = sim.load_output("particles")
    paths = np.asarray(ds.strings("blob/path"))
    order = np.lexsort((ds["blob/idx"], paths))  # the job's order: files, then images
    ds, paths = ds.take(order), paths[order]
    images = np.concatenate([read_images(project.dir / path, ds["blob/idx"][paths == path])
                             for path in dict.fromkeys(paths.tolist())])
    ctf = CtfParams(**{k: ds[f"ctf/{k}"] for k in ("df1_A", "df2_A", "df_angle_rad", "accel_kv", "cs_mm",
                                                   "amp_contrast", "phase_shift_rad")})
    ref = Reconstructor(np, 32, 2.0, use_kernel=False)
    ref.insert(images, rotvec_to_matrix(ds["alignments3D/pose"]), ds["alignments3D/shift"].astype(np.float64), ctf,
               ds["blob/sign"], ds["alignments3D/split"])
    for prefix, expected in zip(("map_half_A", "map_half_B", "map"), ref.finish(), strict=True):
        got = volume(project, job, prefix)
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max(), prefix



def test_direction_order_keeps_chunks_and_groups_nearby_views():
    """A permutation within chunks of file-consecutive particles; inside a chunk, views
    follow each other far more closely than in file order."""
    from cryohpc.compute.geometry import matrix_to_rotvec, random_rotations, rotvec_to_matrix
    from cryohpc.jobtypes.reconstruct import direction_order

    rots = random_rotations(5000, np.random.default_rng(2))
    order = direction_order(matrix_to_rotvec(rots), chunk=1000)
    assert sorted(order.tolist()) == list(range(5000))
    assert (order // 1000 == np.arange(5000) // 1000).all()  # nothing leaves its chunk
    normals = rotvec_to_matrix(matrix_to_rotvec(rots))[:, :, 2]

    def step(n):  # median angle between consecutive views
        return np.median(np.arccos(np.clip((n[1:] * n[:-1]).sum(1), -1, 1)))

    assert step(normals[order]) < step(normals) / 5
