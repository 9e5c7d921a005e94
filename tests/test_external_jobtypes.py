"""Declared job types: external programs run through the lanes, their inputs exported as
STAR or MRC and their outputs imported back as .cs; the shipped RELION job types, with
their conventions checked against RELION itself and against the simulation's truth."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from conftest import cli, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.api import Api
from cryohpc.compute.fsc import fsc
from cryohpc.compute.geometry import matrix_to_rotvec, random_rotations, rotvec_to_matrix
from cryohpc.compute.io_mrc import read_images, read_volume, write_stack, write_volume
from cryohpc.compute.io_star import read_particle_star, write_star
from cryohpc.compute.phantom import phantom
from cryohpc.compute.project import Projector
from cryohpc.dataset import Dataset
from cryohpc.errors import ConfigError, InputFileError
from cryohpc.jobtypes.declared import load_declaration
from cryohpc.jobtypes.external import Exporter
from cryohpc.jobtypes.particles import parse_classes
from cryohpc.jobtypes.star_convert import alignments_from_star, particles_to_star
from cryohpc.status import JobStatus
from cryohpc.text import is_plain_path

RELION_MISSING = None if shutil.which("relion_refine") or os.environ.get("CI") else \
    "RELION not installed (scripts/test.sh installs it)"  # in CI a missing RELION fails the tests
RELION = pytest.mark.skipif(RELION_MISSING is not None, reason=str(RELION_MISSING))


# -- .cs <-> STAR ---------------------------------------------------------------------------

def particle_dataset(n: int, seed: int, groups: int) -> Dataset:
    rng = np.random.default_rng(seed)
    psize = rng.choice([1.0, 1.5, 2.25][:groups], n)
    return Dataset.from_columns({
        "blob/path": [f"J1/stack_{i % 3}.mrcs" for i in range(n)], "blob/idx": np.arange(n, dtype=np.uint32),
        "blob/shape": np.tile(np.array([64, 64], np.uint32), (n, 1)), "blob/psize_A": psize.astype(np.float32),
        "ctf/exp_group_id": rng.integers(0, groups, n).astype(np.uint32),
        "ctf/accel_kv": np.full(n, 300, np.float32), "ctf/cs_mm": np.full(n, 2.7, np.float32),
        "ctf/amp_contrast": np.full(n, 0.07, np.float32),
        "ctf/df1_A": rng.uniform(5000, 30000, n).astype(np.float32),
        "ctf/df2_A": rng.uniform(5000, 30000, n).astype(np.float32),
        "ctf/df_angle_rad": rng.uniform(-np.pi / 2, np.pi / 2, n).astype(np.float32),
        "ctf/phase_shift_rad": rng.uniform(0, np.pi, n).astype(np.float32),
        "ctf/bfactor": rng.uniform(0, 100, n).astype(np.float32),
        "alignments3D/pose": matrix_to_rotvec(random_rotations(n, rng)).astype(np.float32),
        "alignments3D/shift": rng.normal(0, 3, (n, 2)).astype(np.float32),
        "alignments3D/psize_A": psize.astype(np.float32),
        "alignments3D/split": (np.arange(n) % 2).astype(np.uint32),
        "alignments3D/class": rng.integers(0, 4, n).astype(np.uint32),
    })


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 60), seed=st.integers(0, 2**31), groups=st.integers(1, 3))
def test_cs_to_star_and_back_keeps_poses_shifts_ctf_and_optics(tmp_path_factory, n, seed, groups):
    ds = particle_dataset(n, seed, groups)
    blocks, names = particles_to_star(ds, lambda rel: f"/data/{rel}")
    path = tmp_path_factory.mktemp("star") / "p.star"
    write_star(path, blocks)
    table = read_particle_star(path)
    assert [str(x) for x in table.columns["rlnImageName"]] == names
    assert names[0].startswith("000001@/data/J1/")
    back = alignments_from_star(table, table.number("rlnImagePixelSize"))
    assert np.allclose(rotvec_to_matrix(back["alignments3D/pose"].astype(float)),
                       rotvec_to_matrix(ds["alignments3D/pose"].astype(float)), atol=1e-4)
    assert np.allclose(back["alignments3D/shift"], ds["alignments3D/shift"], atol=1e-4)
    assert (back["alignments3D/split"] == ds["alignments3D/split"]).all()
    assert (back["alignments3D/class"] == ds["alignments3D/class"]).all()
    for star, field, scale in (("rlnDefocusU", "ctf/df1_A", 1), ("rlnDefocusV", "ctf/df2_A", 1),
                               ("rlnDefocusAngle", "ctf/df_angle_rad", 180 / np.pi),
                               ("rlnPhaseShift", "ctf/phase_shift_rad", 180 / np.pi),
                               ("rlnCtfBfactor", "ctf/bfactor", 1), ("rlnImagePixelSize", "blob/psize_A", 1),
                               ("rlnAmplitudeContrast", "ctf/amp_contrast", 1), ("rlnVoltage", "ctf/accel_kv", 1)):
        assert np.allclose(table.number(star), ds[field] * scale, rtol=1e-5, atol=1e-3), star
    # one optics group per distinct (exposure group, pixel size, ...), none shared by two
    key = set(zip(ds["ctf/exp_group_id"].tolist(), ds["blob/psize_A"].tolist(), strict=True))
    assert len(blocks["optics"]["rlnOpticsGroup"]) == len(key)


def in_plane(n: int, seed: int) -> Dataset:
    """Particles with 2D alignments only (a 2D classification's), angles anywhere."""
    rng = np.random.default_rng(seed)
    psize = rng.choice([1.0, 2.0, 3.3], n)
    return Dataset.from_columns({
        "blob/path": ["p.mrcs"] * n, "blob/idx": np.arange(n, dtype=np.uint32),
        "blob/shape": np.tile(np.array([48, 48], np.uint32), (n, 1)), "blob/psize_A": psize.astype(np.float32),
        "alignments2D/pose": rng.uniform(-3 * np.pi, 3 * np.pi, n).astype(np.float32),
        "alignments2D/shift": rng.uniform(-6, 6, (n, 2)).astype(np.float32),
        "alignments2D/psize_A": psize.astype(np.float32),
        "alignments2D/class": rng.integers(0, 5, n).astype(np.uint32),
    })


def angle_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(np.angle(np.exp(1j * (np.asarray(a, float) - np.asarray(b, float)))))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_in_plane_alignments_are_the_in_plane_part_of_3d_ones_both_ways(tmp_path_factory, n, seed):
    """An ``alignments2D`` angle and shift are the 3D pose (0, 0, angle) and its shift: the
    STAR a 2D classification writes reads back the same as 2D or as 3D, and back again."""
    ds = in_plane(n, seed)
    blocks, _ = particles_to_star(ds, str)
    parts = blocks["particles"]
    assert (parts["rlnAngleRot"] == 0).all() and (parts["rlnAngleTilt"] == 0).all()
    assert (parts["rlnClassNumber"] == ds["alignments2D/class"] + 1).all()
    path = tmp_path_factory.mktemp("star") / "p.star"
    write_star(path, blocks)
    table = read_particle_star(path)
    psize = table.number("rlnImagePixelSize")
    flat, solid = alignments_from_star(table, psize, dims=2), alignments_from_star(table, psize, dims=3)
    assert angle_gap(flat["alignments2D/pose"], ds["alignments2D/pose"]).max() < 1e-5
    assert np.allclose(flat["alignments2D/shift"], ds["alignments2D/shift"], atol=1e-4)
    assert (flat["alignments2D/class"] == ds["alignments2D/class"]).all()
    assert np.allclose(rotvec_to_matrix(solid["alignments3D/pose"].astype(float)),
                       rotvec_to_matrix(np.stack([np.zeros(n), np.zeros(n), ds["alignments2D/pose"]], 1)), atol=1e-5)
    assert np.allclose(solid["alignments3D/shift"], flat["alignments2D/shift"])


@RELION
def test_in_plane_alignments_are_what_relion_applies(tmp_path):
    """Peer check of the 2D convention: images rotated and shifted by known in-plane poses
    (cryohpc's projector, whose 3D convention relion_reconstruct confirms), described by
    ``alignments2D`` and written as STAR; RELION's own ``relion_stack_create
    --apply_transformation`` must bring every one back onto the unrotated image."""
    box, psize, n = 48, 2.0, 24
    projector = Projector(np, phantom(box, psize, seed=1), psize)
    ds = in_plane(n, seed=5)
    ds["blob/psize_A"] = ds["alignments2D/psize_A"] = psize
    theta, shift = ds["alignments2D/pose"].astype(float), ds["alignments2D/shift"].astype(float)
    write_stack(tmp_path / "p.mrcs",
                projector.project(rotvec_to_matrix(np.stack([np.zeros(n), np.zeros(n), theta], 1)), shift, None), psize)
    upright = projector.project(np.eye(3)[None], np.zeros((1, 2)), None)[0]
    yy, xx = np.mgrid[:box, :box] - box // 2
    disc = xx**2 + yy**2 < (box / 2 - 6) ** 2  # away from the corners the rotation brings in

    def correlations(angles: np.ndarray) -> np.ndarray:
        ds["alignments2D/pose"] = angles
        blocks, _ = particles_to_star(ds, lambda rel: str(tmp_path / rel))
        write_star(tmp_path / "p.star", blocks)
        run = subprocess.run(["relion_stack_create", "--i", str(tmp_path / "p.star"), "--o", str(tmp_path / "aligned"),
                              "--apply_transformation"], capture_output=True, text=True)
        assert run.returncode == 0, run.stdout + run.stderr
        a = read_images(tmp_path / "aligned.mrcs")[:, disc]
        b = upright[disc]
        a, b = a - a.mean(1, keepdims=True), b - b.mean()
        return (a @ b) / np.sqrt((a * a).sum(1) * (b * b).sum())

    assert correlations(theta).min() > 0.99
    assert np.median(correlations(-theta)) < 0.9  # the other hand would not align them: the check can fail


def test_dark_particles_are_refused_with_the_reason():
    ds = particle_dataset(4, 0, 1).add_fields([("blob/sign", "<f4")], {"blob/sign": -1.0})
    with pytest.raises(InputFileError, match="blob/sign -1"):
        particles_to_star(ds, str)


def test_class_lists_parse_and_bad_ones_are_named():
    assert parse_classes("1, 3,5-7") == [1, 3, 5, 6, 7]
    for bad, says in (("0", "count from 1"), ("3-1", "upwards"), ("a", "'a'"), (",", "no class")):
        with pytest.raises(InputFileError, match=says):
            parse_classes(bad)


# -- declarations ------------------------------------------------------------------------------

PROGRAM = """\
#!{python}
# a site's own program: scales a map, writes the label it was given, reports its steps
import argparse, sys
from cryohpc.compute.io_mrc import read_volume, write_volume
ap = argparse.ArgumentParser()
ap.add_argument("--i"); ap.add_argument("--o"); ap.add_argument("--factor", type=float); ap.add_argument("--label")
a = ap.parse_args()
print("step 1 of 2", flush=True)
vol, psize = read_volume(a.i)
write_volume(a.o, vol * a.factor, psize)
open(a.o + ".label", "w").write(a.label)
print("step 2 of 2", flush=True)
sys.exit(3 if a.factor < 0 else 0)
"""

# a program given one map, as the site-declared types of these tests take it
PROGRAM_AND_MAP_INPUT = """\
program:
  executable: {program}
inputs:
  - name: volume
    type: volume
    slots: [{{name: map}}]
    export: mrc
"""

DECLARATION = """\
name: scale_map
title: Scale a map
category: utility
""" + PROGRAM_AND_MAP_INPUT + """\
params:
  - {{name: factor, type: float, default: 2.0}}
  - {{name: label, type: str, default: plain}}
resources: {{cpus: 1, ram_gb: 1}}
args: --i {{{{ inputs.volume.map }}}} --o {{{{ out }}}}/scaled.mrc --factor {{{{ factor }}}} --label {{{{ label }}}}
progress:
  - {{pattern: 'step (\\d+) of 2', what: step}}
outputs:
  - name: volume
    type: volume
    import: [{{result: map, mrc: scaled.mrc}}]
"""


def declare_scale_map(api: Api, folder: Path) -> Path:
    program = folder / "scale_map.py"
    folder.mkdir(parents=True, exist_ok=True)
    program.write_text(PROGRAM.format(python=sys.executable))
    program.chmod(0o755)
    path = api.instance.paths.jobtypes / "scale_map.yaml"
    path.write_text(DECLARATION.format(program=program))
    return path


def run_scale_map(project, sample_volume: Path, lane: str, label: str = "a; rm -rf ~ $(id) `x` 'q'",
                  factor: float = 2.0, timeout_s: float = 120):
    imp = project.create_job("import_volume", params={"volume_path": str(sample_volume)})
    imp.queue()
    assert imp.wait(60) == JobStatus.COMPLETED, imp.model.errors_run
    job = project.create_job("scale_map", params={"factor": factor, "label": label})
    job.connect("volume", imp.uid, "imported_volume_1")
    job.queue(lane=lane)
    return imp, job, job.wait(timeout_s)


def check_scaled(project, imp, job, label: str) -> None:
    assert job.model.status == JobStatus.COMPLETED, job.model.errors_run
    src = read_volume(project.dir / imp.load_output("imported_volume_1").strings("map/path")[0])[0]
    out = job.load_output("volume")
    scaled = project.dir / out.strings("map/path")[0]
    assert np.allclose(read_volume(scaled)[0], 2 * src)
    assert Path(str(scaled) + ".label").read_text() == label  # hostile text arrived as one literal word
    assert any("step: 2" in line for line in job.log_lines())  # the program's progress, parsed


def test_a_site_declared_program_runs_on_the_local_lane_with_values_quoted(api, master, project, sample_volume,
                                                                          tmp_path):
    declare_scale_map(api, tmp_path / "bin")
    label = "a; rm -rf ~ $(id) `x` 'q'"
    imp, job, status = run_scale_map(project, sample_volume, "local", label)
    check_scaled(project, imp, job, label)
    log = (project.dir / job.uid / "job.log").read_text()
    assert "step 1 of 2" in log and "running: " in log


def test_a_failing_program_fails_its_job_with_its_last_lines_and_the_master_serves_on(api, master, project,
                                                                                      sample_volume, tmp_path):
    declare_scale_map(api, tmp_path / "bin")
    _, job, status = run_scale_map(project, sample_volume, "local", factor=-1.0)
    assert status == JobStatus.FAILED
    message = job.model.errors_run[-1].message
    assert "scale_map.py exited with status 3" in message and "step 2 of 2" in message
    imp, job, status = run_scale_map(project, sample_volume, "local")
    assert status == JobStatus.COMPLETED


BROKEN = [
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: ''\nbogus: 1\n", 6, "bogus"),
    ("name: x\ntitle: X\ncategory: utility\nprogram:\n  executable: x\n  version: {command: [x], pattern: '('}\n"
     "args: ''\n", 6, "regular expression"),
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: '{{ a '\n", 1, "syntax"),
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: ''\nresource_params: {mpi_ranks: n}\n",
     1, "param 'n'"),
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: ''\noutputs:\n  - name: o\n    type: v\n"
     "    import: [{result: map, star: a.star, input: nope}]\n", 1, "'nope'"),
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: ''\noutputs:\n  - name: o\n    type: v\n"
     "    import: [{result: map}]\n", 9, "exactly one of mrc or star"),
    ("name: x\ntitle: X\ncategory: utility\nprogram: {executable: x}\nargs: ''\ninputs:\n  - {name: v, type: v, "
     "export: mrc}\noutputs:\n  - name: o\n    type: v\n    import: [{result: map, star: a.star, input: v}]\n",
     1, "not exported as star"),
    ("name: x\ntitle: X\ncategory: nonsense\nprogram: {executable: x}\nargs: ''\n", 3, "category"),
    ("name: x\n  title: X\n", 2, "not valid YAML"),
]


@pytest.mark.parametrize("text,line,says", BROKEN)
def test_a_broken_declaration_names_its_file_and_line(tmp_path, text, line, says):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_declaration(path)
    assert str(err.value).startswith(f"{path}:"), str(err.value)
    assert says in str(err.value)
    if line > 1:
        assert str(err.value).startswith(f"{path}:{line}:"), str(err.value)


def test_a_broken_site_declaration_costs_only_itself(api, tmp_path):
    declare_scale_map(api, tmp_path / "bin")
    (api.instance.paths.jobtypes / "broken.yaml").write_text("name: broken\ntitle: B\n")
    (api.instance.paths.jobtypes / "homo.yaml").write_text(
        (api.instance.paths.jobtypes / "scale_map.yaml").read_text().replace("name: scale_map", "name: homo_reconstruct"))
    assert {"scale_map", "relion_refine3d", "homo_reconstruct"} <= {s.name for s in api.jobtypes()}
    out = cli(api.instance.home, "jobtypes", "validate")
    assert out.returncode == 1
    assert "ok: scale_map" in out.stdout and "broken.yaml" in out.stdout and "is built in" in out.stdout
    api.create_project("p")
    missing = cli(api.instance.home, "job", "create", "P1", "broken")
    assert missing.returncode != 0 and "broken.yaml" in missing.stderr and "Traceback" not in missing.stderr
    assert cli(api.instance.home, "jobtypes", "validate", str(api.instance.paths.jobtypes / "scale_map.yaml")
               ).returncode == 0


def test_every_shipped_declaration_loads_and_says_what_it_needs():
    shipped = sorted((Path(__file__).resolve().parents[1] / "cryohpc/jobtypes/programs").glob("*.yaml"))
    names = {load_declaration(p).name for p in shipped}
    assert {"relion_refine3d", "relion_class2d", "relion_class3d", "relion_postprocess", "relion_reconstruct"} <= names
    for path in shipped:
        decl = yaml.safe_load(path.read_text())
        assert decl["program"]["version"]["min"] == "3.1", path  # the version each needs, checked at run time


# -- RELION ---------------------------------------------------------------------------------

OVERSUBSCRIBED = "lanes:\n  - {name: over, type: node, kind: local, oversubscribe: true}\n"


def simulate(project, n=400, box=32, psize=6.0, snr=0.5, seed=3):
    """Particles of a phantom (one per seed) with known poses."""
    sim = project.create_job("simulate_particles", params={"n_particles": n, "box": box, "psize_A": psize, "snr": snr,
                                                           "seed": seed})
    sim.queue()
    assert sim.wait(300) == JobStatus.COMPLETED, sim.model.errors_run
    return sim


@RELION
def test_relion_reconstruct_of_exported_particles_matches_the_truth_and_homo_reconstruct(api, master, project):
    """cryohpc's poses, shifts and CTF written as STAR and reconstructed by RELION: the
    export's conventions are RELION's, or the map would not match the truth."""
    sim = simulate(project, n=1500, box=48, psize=2.0, snr=0)
    truth = read_volume(project.dir / sim.load_output("true_volume").strings("map/path")[0])[0]
    maps = {}
    for job_type in ("relion_reconstruct", "homo_reconstruct"):
        job = project.create_job(job_type, params={"compute_num_ranks": 2})
        job.connect("particles", sim.uid, "particles")
        job.queue()
        assert job.wait(300) == JobStatus.COMPLETED, job.model.errors_run
        maps[job_type] = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
    theirs, ours = fsc(maps["relion_reconstruct"], truth, 2.0), fsc(maps["homo_reconstruct"], truth, 2.0)
    assert theirs.up_to(0.9).min() >= 0.9, theirs.fsc  # noise-free: every shell to 0.9 of Nyquist
    assert ours.up_to(0.9).min() >= theirs.up_to(0.9).min() - 0.01


@RELION
def test_relion_reads_particles_of_a_project_whose_path_it_would_take_apart(api, master, tmp_path):
    """A project directory with a blank, ``#``, ``:`` and ``@`` in its path: RELION
    would read ``/x #1: y/...`` as a comment or a file-type suffix, so the program is told
    of its files relative to the job directory it runs in."""
    project = api.create_project("odd", project_dir=tmp_path / "cryo #1: a@b c")
    sim = simulate(project, n=300, box=24, psize=3.0, snr=0)
    maps, jobs = {}, {}
    for job_type in ("relion_reconstruct", "homo_reconstruct"):
        job = jobs[job_type] = project.create_job(job_type)
        job.connect("particles", sim.uid, "particles")
        job.queue()
        assert job.wait(300) == JobStatus.COMPLETED, job.model.errors_run
        maps[job_type] = read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]
    exported = project.dir / jobs["relion_reconstruct"].model.job_dir / "exported"
    names = read_particle_star(exported / "particles.star").columns["rlnImageName"]
    assert all(is_plain_path(n.split("@", 1)[1]) and n.split("@", 1)[1].startswith("../") for n in names)
    agree = fsc(maps["relion_reconstruct"], maps["homo_reconstruct"], 3.0)
    assert agree.up_to(0.9).min() >= 0.9, agree.fsc


def test_stacks_whose_paths_relion_would_take_apart_are_named_by_plain_links_for_one_run(tmp_path):
    """A stack RELION cannot be told of by its path (a cache under ``/scratch/#2``, a
    name with a line break) is named through a link under ``exported/stacks/``, relative
    to the job directory; the links go when the run is done."""
    job_dir, odd = tmp_path / "J4", tmp_path / "cache #2"
    (job_dir / "exported").mkdir(parents=True)
    odd.mkdir()
    stacks = [odd / "a.mrcs", odd / "b\nc.mrc", tmp_path / "plain.mrcs"]
    for i, p in enumerate(stacks):
        p.write_bytes(bytes([i]))
    exporter = Exporter(SimpleNamespace(job_dir=job_dir), job_dir / "exported")
    names = [exporter.star_name(p) for p in stacks + stacks]
    assert names[:3] == names[3:]
    assert names[0] == "exported/stacks/000001.mrcs" and names[1] == "exported/stacks/000002.mrc"
    assert names[2] == str(stacks[2])  # a plain path is told as it is
    assert [(job_dir / n).read_bytes() for n in names[:3]] == [b"\0", b"\1", b"\2"]
    exporter.close()
    assert not (job_dir / "exported" / "stacks").exists() and all(p.exists() for p in stacks)


def angular_error_deg(refined: Dataset, truth: Dataset) -> np.ndarray:
    order = {u: i for i, u in enumerate(truth["uid"].tolist())}
    rows = np.array([order[u] for u in refined["uid"].tolist()])
    a = rotvec_to_matrix(refined["alignments3D/pose"].astype(float))
    b = rotvec_to_matrix(truth["alignments3D/pose"][rows].astype(float))
    return np.degrees(np.arccos(np.clip((np.einsum("nij,nij->n", a, b) - 1) / 2, -1, 1)))


REFINE = {"particle_diameter_A": 150, "compute_num_ranks": 3, "healpix_order": 1, "local_healpix_order": 3,
          "offset_range_px": 3, "fast_convergence": True, "initial_lowpass_A": 40, "random_seed": 1}


def check_refined(project, sim, ref) -> dict:
    refined, truth = ref.load_output("particles"), sim.load_output("particles")
    err = angular_error_deg(refined, truth)
    true_map = read_volume(project.dir / sim.load_output("true_volume").strings("map/path")[0])[0]
    refined_map = read_volume(project.dir / ref.load_output("volume").strings("map/path")[0])[0]
    curve = fsc(refined_map, true_map, 6.0)
    # RELION's own poses back in cryohpc's convention: near the truth, not a flipped hand
    assert np.median(err) < 10, np.median(err)
    assert curve.resolution_A(0.5) < 16, curve.fsc
    group = next(g for g in ref.model.outputs if g.name == "particles")
    assert {r.name for r in group.results} >= {"alignments3D", "blob", "ctf"}  # images and CTF pass through
    assert not group.result("alignments3D").passthrough
    return {"median_angular_error_deg": float(np.median(err)), "fsc05_A": curve.resolution_A(0.5)}


def create(api: Api, project, job_type: str, params: dict, connections: dict[str, str | list[str]],
           lane: str = "local"):
    """A job built and queued from the command line, as a user would."""
    home, uid = api.instance.home, project.uid
    args = [f"{k}={v}" for k, v in params.items()]
    made = cli(home, "--json", "job", "create", uid, job_type, *[a for kv in args for a in ("-p", kv)], check=True)
    job = json.loads(made.stdout)["uid"]
    for name, sources in connections.items():
        for source in [sources] if isinstance(sources, str) else sources:
            cli(home, "job", "connect", uid, job, name, source, check=True)
    cli(home, "job", "queue", uid, job, "--lane", lane, check=True)
    return project.find_job(job)


@RELION
def test_class2d_select_refine3d_killed_and_resumed_then_postprocess_from_the_cli(api, master, project):
    (api.instance.paths.site_configs / "over.yaml").write_text(OVERSUBSCRIBED)
    sim = simulate(project)
    c2 = create(api, project, "relion_class2d", {"num_classes": 2, "iterations": 3, "particle_diameter_A": 150,
                                                 "compute_num_ranks": 2, "psi_step_deg": 12, "offset_range_px": 3,
                                                 "random_seed": 1},
                {"particles": f"{sim.uid}.particles"}, lane="over")
    assert c2.wait(300) == JobStatus.COMPLETED, c2.model.errors_run
    averages = c2.load_output("class_averages")
    assert len(averages) == 2 and (averages["blob/shape"] == 32).all()
    classes = c2.load_output("particles")["alignments2D/class"]
    larger = int(np.bincount(classes, minlength=2).argmax())  # the class a user would keep
    sel = create(api, project, "select_classes", {"classes": str(larger + 1)}, {"particles": f"{c2.uid}.particles"})
    assert sel.wait(60) == JobStatus.COMPLETED, sel.model.errors_run
    # the 2D classes, not the 3D class the simulation's particles pass through
    assert len(sel.load_output("particles")) == int((classes == larger).sum()) >= 200

    # refined from the selected particles, killed after its third iteration, resumed: RELION
    # continues from its last optimiser file
    ref = create(api, project, "relion_refine3d", REFINE,
                 {"particles": f"{sel.uid}.particles", "volume": f"{sim.uid}.true_volume"}, lane="over")
    out = project.dir / ref.uid / "out"
    wait_for(lambda: len(list(out.glob("run_it*_optimiser.star"))) >= 3, 300, "RELION's third iteration")
    cli(api.instance.home, "job", "kill", project.uid, ref.uid, check=True)
    assert ref.wait(60) == JobStatus.KILLED
    last = sorted(out.glob("run_it*_optimiser.star"))[-1]
    first_files = {p: p.stat().st_mtime_ns for p in out.glob("run_it000_*")}
    cli(api.instance.home, "job", "resume", project.uid, ref.uid, check=True)
    assert ref.wait(600) == JobStatus.COMPLETED, ref.model.errors_run
    log = (project.dir / ref.uid / "job.log").read_text()
    assert f"continuing from out/{last.name}" in log, log[-3000:]
    assert all(p.stat().st_mtime_ns == t for p, t in first_files.items())  # earlier iterations were not redone
    figures = check_refined(project, sim, ref)
    assert ref.model.outputs[0].summary["resolution_A"] > 0

    post = create(api, project, "relion_postprocess", {}, {"volume": f"{ref.uid}.volume"})
    assert post.wait(120) == JobStatus.COMPLETED, post.model.errors_run
    summary = post.model.outputs[0].summary
    assert 12 <= summary["resolution_A"] < 20, summary
    assert {"map", "map_sharp"} <= set(post.load_output("volume").prefixes())
    print("relion_refine3d on the local lane:", figures)


def volume_job(project, volume: np.ndarray, psize: float, path: Path):
    write_volume(path, volume, psize)
    job = project.create_job("import_volume", params={"volume_path": str(path)})
    job.queue()
    assert job.wait(60) == JobStatus.COMPLETED, job.model.errors_run
    return job


@RELION
def test_class3d_of_two_conformations_separates_them_and_select_classes_keeps_one(api, master, project, tmp_path):
    """Particles of a complex and of the same complex missing a domain, connected as two
    sets and classified into 2 classes from the whole complex's map: each class holds one
    conformation's particles."""
    whole = phantom(32, 6.0, seed=3)
    part = whole.copy()
    part[:, :, 16:] = 0  # one half gone
    sims = []
    for seed, volume in ((3, whole), (8, part)):
        source = volume_job(project, volume, 6.0, tmp_path / f"v{seed}.mrc")
        sim = project.create_job("simulate_particles", params={"n_particles": 150, "snr": 1.0, "seed": seed})
        sim.connect("volume", source.uid, "imported_volume_1")
        sim.queue()
        assert sim.wait(300) == JobStatus.COMPLETED, sim.model.errors_run
        sims.append(sim)
    c3 = create(api, project, "relion_class3d",
                {"num_classes": 2, "iterations": 12, "particle_diameter_A": 150, "healpix_order": 1,
                 "offset_range_px": 3, "initial_lowpass_A": 40, "compute_num_threads": 2, "random_seed": 1},
                {"particles": [f"{s.uid}.particles" for s in sims], "volume": f"{source.uid}.imported_volume_1"})
    assert c3.wait(600) == JobStatus.COMPLETED, c3.model.errors_run
    assert len(c3.load_output("class_volumes")) == 2
    classified = c3.load_output("particles")
    firsts = sims[0].load_output("particles")
    assert len(classified) == 300 and set(classified.strings("blob/path")) == set(
        firsts.strings("blob/path")) | set(sims[1].load_output("particles").strings("blob/path"))
    from_whole = np.isin(classified["uid"], firsts["uid"])
    cls = classified["alignments3D/class"]
    assert set(cls.tolist()) <= {0, 1}
    mine = int(np.bincount(cls[from_whole], minlength=2).argmax())  # the class most of the whole's went to
    purity = float(((cls == mine) == from_whole).mean())
    assert purity >= 0.9, (purity, np.bincount(cls[from_whole], minlength=2), np.bincount(cls[~from_whole], minlength=2))

    sel = create(api, project, "select_classes", {"classes": str(mine + 1)}, {"particles": f"{c3.uid}.particles"})
    assert sel.wait(60) == JobStatus.COMPLETED, sel.model.errors_run
    kept = sel.load_output("particles")
    assert len(kept) == int((cls == mine).sum())
    assert np.isin(kept["uid"], firsts["uid"]).mean() >= 0.9  # as the purity asked above
    print(f"relion_class3d: {purity:.1%} of particles in their conformation's class")


def test_a_relion_job_type_refuses_a_wrong_rank_count_before_running(api, master, project):
    sim = simulate(project, n=20, box=16, psize=6.0)
    ref = project.create_job("relion_refine3d", params={**REFINE, "compute_num_ranks": 2})
    ref.connect("particles", sim.uid, "particles")
    ref.connect("volume", sim.uid, "true_volume")
    ref.queue()
    assert ref.wait(60) == JobStatus.FAILED
    assert "needs at least 3 MPI ranks" in ref.model.errors_run[-1].message


COUNTER = """\
#!{python}
# counts to 8, half a second a step, a restart file per step; --from goes on from one
import argparse, pathlib, re, time
from cryohpc.compute.io_mrc import read_volume, write_volume
ap = argparse.ArgumentParser()
ap.add_argument("--i"); ap.add_argument("--o"); ap.add_argument("--from", dest="start")
a = ap.parse_args()
out = pathlib.Path(a.o)
n = int(re.search(r"(\\d+)", pathlib.Path(a.start).name).group(1)) if a.start else 0
while n < 8:
    time.sleep(0.5)
    n += 1
    (out / f"count_{{n:03d}}.ckpt").write_text(str(n))
    with open(out / "counted.txt", "a") as f:
        f.write(f"{{n}}\\n")
    print(f"count {{n}}", flush=True)
vol, psize = read_volume(a.i)
write_volume(str(out / "same.mrc"), vol, psize)
"""

COUNTER_DECLARATION = """\
name: count_slowly
title: Count slowly
category: utility
""" + PROGRAM_AND_MAP_INPUT + """\
resources: {{cpus: 1, ram_gb: 1}}
args: --i {{{{ inputs.volume.map }}}} --o {{{{ out }}}}
continue:
  checkpoint: count_*.ckpt
  args: --i {{{{ inputs.volume.map }}}} --o {{{{ out }}}} --from {{{{ checkpoint }}}}
outputs:
  - name: volume
    type: volume
    import: [{{result: map, mrc: same.mrc}}]
"""


def test_a_declared_program_asked_to_stop_goes_on_from_its_checkpoint(api, master, project, sample_volume, tmp_path):
    """The stop request (a time limit near) reaches a program that continues from restart
    files: it is stopped, and the next run continues from its last one (here the local lane
    does not requeue: the job fails saying so, and a resume goes on)."""
    program = tmp_path / "count.py"
    program.write_text(COUNTER.format(python=sys.executable))
    program.chmod(0o755)
    (api.instance.paths.jobtypes / "count.yaml").write_text(COUNTER_DECLARATION.format(program=program))
    imp = project.create_job("import_volume", params={"volume_path": str(sample_volume)})
    imp.queue()
    assert imp.wait(60) == JobStatus.COMPLETED, imp.model.errors_run
    job = project.create_job("count_slowly")
    job.connect("volume", imp.uid, "imported_volume_1")
    job.queue()
    deadline = time.monotonic() + 60
    while not list(job.dir.rglob("count_002.ckpt")):
        assert time.monotonic() < deadline and job.model.status != JobStatus.FAILED, job.model.errors_run
        time.sleep(0.1)
    (job.dir / "stop_request").touch()
    assert job.wait(60) == JobStatus.FAILED
    assert "does not requeue" in job.model.errors_run[-1].message, job.model.errors_run
    counted = next(job.dir.rglob("counted.txt"))
    first = counted.read_text().split()
    assert 2 <= len(first) < 8
    job.resume()
    assert job.wait(120) == JobStatus.COMPLETED, job.model.errors_run
    assert counted.read_text().split() == [str(i) for i in range(1, 9)]  # went on, nothing counted twice
