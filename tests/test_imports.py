"""import_particles and import_volume, run by a real worker under the master."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import db_snapshot

from cryohpc.compute.geometry import relion_euler_to_matrix, rotvec_to_matrix
from cryohpc.compute.io_mrc import read_images, read_info, read_volume
from cryohpc.compute.io_star import read_particle_star
from cryohpc.dataset import Dataset
from cryohpc.errors import DatasetError, InputFileError
from cryohpc.sampledata import write_sample_particles
from cryohpc.status import JobStatus
from cryohpc.text import is_plain_path


def run_import(project, **params):
    job = project.create_job("import_particles", params=params)
    job.queue()
    return job, job.wait(60)


def test_star_import_matches_ground_truth(project, sample, master):
    job, status = run_import(project, particle_meta_path=str(sample.star))
    assert status == JobStatus.COMPLETED
    ds = job.load_output("imported_particles")
    assert len(ds) == sample.n
    assert {r.name for r in job.model.output("imported_particles").results} == {"blob", "ctf", "alignments3D"}
    assert np.allclose(ds["ctf/df1_A"], sample.defocus_u_A, rtol=1e-6)
    assert np.allclose(ds["blob/psize_A"], sample.psize_A)
    assert np.allclose(ds["ctf/accel_kv"], 300) and np.allclose(ds["ctf/cs_mm"], 2.7)
    # poses: R = Aᵀ with A RELION's Euler matrix
    A = relion_euler_to_matrix(*sample.angles_deg.T)
    R = rotvec_to_matrix(ds["alignments3D/pose"])
    assert np.abs(R - np.swapaxes(A, 1, 2)).max() < 1e-5
    assert np.allclose(ds["alignments3D/shift"], sample.origin_A / sample.psize_A, atol=1e-5)
    assert ds["alignments3D/split"].tolist() == (np.arange(sample.n) % 2).tolist()
    # blob paths are project-relative links to the original stacks, images intact
    paths = ds.strings("blob/path")
    assert all(p.startswith(f"{job.uid}/imported/") for p in paths)
    first = project.dir / paths[0]
    assert first.is_symlink() and first.resolve() == sample.stacks[0].resolve()
    img = read_images(project.dir / paths[-1], ds["blob/idx"][-1:])
    truth = read_images(sample.stacks[-1], [ds["blob/idx"][-1]])
    assert np.array_equal(img, truth)


def test_relion30_star_takes_pixel_size_from_mrc_header(project, tmp_path, master):
    s = write_sample_particles(tmp_path / "r30", n=10, box=16, psize_A=1.7, optics=False)
    job, status = run_import(project, particle_meta_path=str(s.star))
    assert status == JobStatus.COMPLETED, job.model.errors_run
    ds = job.load_output("imported_particles")
    assert np.allclose(ds["blob/psize_A"], 1.7, atol=1e-4)
    assert np.allclose(ds["ctf/amp_contrast"], 0.1)  # param default when the STAR has none


def test_ignore_poses_and_flip_sign(project, sample, master):
    job, status = run_import(project, particle_meta_path=str(sample.star), ignore_poses=True, flip_sign=True)
    assert status == JobStatus.COMPLETED
    ds = job.load_output("imported_particles")
    assert ds.prefixes() == ["blob", "ctf"]
    assert np.all(ds["blob/sign"] == -1)


def _edit_star(src, dst, drop_column=None, replace=None):
    text = src.read_text()
    if replace:
        text = text.replace(*replace)
    if drop_column:
        lines = text.splitlines()
        header = [i for i, ln in enumerate(lines) if ln.startswith("_rln")]
        block_start = [i for i in header if lines[i].startswith("_rlnImageName")][0]
        names = [i for i in header if i >= block_start]
        col = next(k for k, i in enumerate(names) if lines[i].split()[0] == drop_column)
        del lines[names[col]]
        for i in range(names[-1], len(lines)):
            fields = lines[i].split()
            if len(fields) == len(names):
                del fields[col]
                lines[i] = "\t".join(fields)
        text = "\n".join(lines) + "\n"
    dst.write_text(text)
    return dst


@pytest.mark.parametrize("case, expect", [
    ("missing_column", r"data_particles lacks column\(s\) rlnDefocusV \(needed for ctf/df1_A"),
    ("bad_index", r"image index 999 of stack 'Particles/stack_000.mrcs' is out of range \(the stack holds 20 images\)"),
    ("missing_stack", r"particle stack 'Particles/nowhere.mrcs' not found"),
])
def test_bad_star_fails_with_named_field_and_registers_nothing(project, sample, master, case, expect):
    star = sample.star.parent / f"{case}.star"
    if case == "missing_column":
        _edit_star(sample.star, star, drop_column="_rlnDefocusV")
    elif case == "bad_index":
        _edit_star(sample.star, star, replace=("000001@Particles/stack_000.mrcs", "000999@Particles/stack_000.mrcs"))
    else:
        _edit_star(sample.star, star, replace=("Particles/stack_001.mrcs", "Particles/nowhere.mrcs"))
    job, status = run_import(project, particle_meta_path=str(star))
    assert status == JobStatus.FAILED
    message = job.model.errors_run[-1].message
    assert str(star) in message
    assert re.search(expect, message), message
    assert not any(r.metafiles for g in job.model.outputs for r in g.results)


def test_truncated_stack_fails_naming_the_file(project, sample, master):
    data = sample.stacks[1].read_bytes()
    sample.stacks[1].write_bytes(data[: len(data) - 100])
    job, status = run_import(project, particle_meta_path=str(sample.star))
    assert status == JobStatus.FAILED
    msg = job.model.errors_run[-1].message
    assert "stack_001.mrcs" in msg and "corrupt or truncated MRC file" in msg


def test_corrupt_cs_import_fails_naming_the_file(api, project, tmp_path, master):
    bad = tmp_path / "bad.cs"
    bad.write_bytes(b"\x93NUMPY garbage")
    job, status = run_import(project, particle_meta_path=str(bad))
    assert status == JobStatus.FAILED
    assert f"{bad}: corrupt or truncated numpy-format .cs file" in job.model.errors_run[-1].message
    before = db_snapshot(api)
    with pytest.raises(Exception, match="only building jobs can be queued"):
        job.queue()
    assert db_snapshot(api) == before


def test_stacks_with_awkward_names_are_linked_under_plain_ones(project, sample, tmp_path, master):
    """Stack names a file system allows but programs take apart (blanks, ``#``, ``:``,
    ``@``, a tab, a line break) enter the project under plain link names."""
    odd = tmp_path / "odd"
    odd.mkdir()
    sources = []
    for i, name in enumerate(["a b #1: x@y.mrcs", "tab\tand\nbreak 'q\".mrcs"]):
        sources.append(odd / name)
        sources[-1].write_bytes(sample.stacks[i].read_bytes())
    count = 3
    meta = tmp_path / "odd.cs"
    Dataset.from_columns({"blob/path": [str(p) for p in sources for _ in range(count)],
                          "blob/idx": np.tile(np.arange(count, dtype=np.uint32), 2)}).save(meta)
    job, status = run_import(project, particle_meta_path=str(meta), psize_A=1.5)
    assert status == JobStatus.COMPLETED, job.model.errors_run
    ds = job.load_output("imported_particles")
    paths = ds.strings("blob/path")
    assert all(is_plain_path(p) for p in paths), paths
    for k, source in enumerate(sources):
        link = project.dir / paths[k * count]
        assert link.resolve() == source.resolve()
        assert np.array_equal(read_images(link, np.arange(count)), read_images(sample.stacks[k], np.arange(count)))


def test_a_cs_whose_paths_are_not_text_fails_naming_file_row_and_bytes(project, tmp_path, master):
    meta = tmp_path / "latin1.cs"
    Dataset.from_columns({"blob/path": np.array([b"ok.mrcs", b"caf\xe9.mrcs"]),
                          "blob/idx": np.zeros(2, np.uint32)}).save(meta, csdat=True)
    job, status = run_import(project, particle_meta_path=str(meta), psize_A=1.5)
    assert status == JobStatus.FAILED
    err = job.model.errors_run[-1]
    assert err.message == f"{meta}: field 'blob/path' row 2 holds b'caf\\xe9.mrcs', which is not UTF-8 text"
    assert not err.traceback


def test_import_volume(project, sample_volume, master):
    job = project.create_job("import_volume", params={"volume_path": str(sample_volume)})
    job.queue()
    assert job.wait(60) == JobStatus.COMPLETED
    ds = job.load_output("imported_volume_1")
    assert ds["map/shape"].tolist() == [[16, 16, 16]]
    assert np.allclose(ds["map/psize_A"], 2.0)
    assert (project.dir / ds.strings("map/path")[0]).is_file()


@pytest.mark.parametrize("where, says", [("folder", "a folder"), ("/dev/null", "not a regular file"),
                                         ("fifo", "not a regular file"), ("missing", "no such file")])
def test_a_data_path_that_is_not_a_regular_file_says_what_it_is(tmp_path, where, says):
    path = tmp_path if where == "folder" else tmp_path / where if where != "/dev/null" else Path(where)
    if where == "fifo":
        os.mkfifo(path)  # opening it would wait for a writer forever
    with pytest.raises(InputFileError, match=f"^{re.escape(str(path))}: {says}; a STAR file was expected$"):
        read_particle_star(path)
    for read in (read_info, read_volume, read_images):
        with pytest.raises(InputFileError, match=f"^{re.escape(str(path))}: {says}; an MRC file was expected$"):
            read(path)
    with pytest.raises(DatasetError, match=f"^{re.escape(str(path))}: {says}; a .cs file was expected$"):
        Dataset.load(path)


def test_rotation_conventions_known_case():
    # RELION rot = 90°: A maps x to -y; our R = Aᵀ is +90° about z, pose (0, 0, π/2)
    A = relion_euler_to_matrix(np.array([90.0]), np.array([0.0]), np.array([0.0]))[0]
    assert np.allclose(A, [[0, 1, 0], [-1, 0, 0], [0, 0, 1]], atol=1e-12)
    from cryohpc.compute.geometry import pose_to_relion_euler, relion_euler_to_pose

    assert np.allclose(relion_euler_to_pose([90.0], [0.0], [0.0]), [[0, 0, np.pi / 2]], atol=1e-6)
    rng = np.random.default_rng(1)
    ang = np.stack([rng.uniform(-180, 180, 200), rng.uniform(1, 179, 200), rng.uniform(-180, 180, 200)], 1)
    back = np.stack(pose_to_relion_euler(relion_euler_to_pose(*ang.T)), 1)
    assert np.allclose(relion_euler_to_matrix(*back.T), relion_euler_to_matrix(*ang.T), atol=1e-5)
