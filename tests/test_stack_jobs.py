"""restack_particles and downsample_particles: new stacks that replace the originals (the
job that wrote them can then be cleared), Fourier cropping checked against band-limited
images whose coarse samples are known exactly."""

from __future__ import annotations

import mrcfile
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.compute.fsc import fsc
from cryohpc.compute.io_mrc import read_volume
from cryohpc.jobtypes.stacks import fourier_resize
from cryohpc.status import JobStatus


def done(job, timeout=240):
    assert job.wait(timeout) == JobStatus.COMPLETED, [e.message for e in job.model.errors_run]
    return job


def map_of(project, job):
    return read_volume(project.dir / job.load_output("volume").strings("map/path")[0])[0]


def cosines(box: int, terms: list[tuple[int, int, float, float]], x: np.ndarray) -> np.ndarray:
    """A real image made of cosines of integer frequencies, sampled at coordinates ``x``
    (in units of the box)."""
    gy, gx = np.meshgrid(x, x, indexing="ij")
    return sum(a * np.cos(2 * np.pi * (ky * gy + kx * gx) + ph) for ky, kx, a, ph in terms)


@settings(max_examples=40, deadline=None)
@given(big=st.sampled_from([16, 24, 32, 48]), factor=st.sampled_from([2, 4]),
       terms=st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3), st.floats(0.1, 2), st.floats(0, 6.28)),
                      min_size=1, max_size=4))
def test_fourier_crop_of_band_limited_images_gives_the_coarse_samples(big, factor, terms):
    small = big // factor
    terms = [t for t in terms if max(abs(t[0]), abs(t[1])) < small // 2] or [(0, 0, 1.0, 0.0)]
    fine = cosines(big, terms, np.arange(big) / big)
    coarse = cosines(small, terms, np.arange(small) / small)
    out = fourier_resize(fine[None], small)[0]
    np.testing.assert_allclose(out, coarse, atol=1e-4 * max(1.0, np.abs(coarse).max()))
    back = fourier_resize(out[None], big)[0]  # padding is cropping's inverse for band-limited images
    np.testing.assert_allclose(back, fine, atol=1e-4 * max(1.0, np.abs(fine).max()))


def test_restack_then_clear_the_source_gives_the_same_map_and_a_smaller_project(api, project, master):
    sim = project.create_job("simulate_particles", params={"n_particles": 400, "box": 24, "psize_A": 2.0,
                                                           "snr": 5.0, "seed": 5, "particles_per_stack": 100})
    sub = project.create_job("subset_particles", params={"max_items": 150, "random_seed": 2})
    sub.connect("particles", sim.uid, "particles")
    restack = project.create_job("restack_particles", params={"particles_per_stack": 64, "compute_num_ranks": 2})
    restack.connect("particles", sub.uid, "particles")
    before = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    before.connect("particles", sub.uid, "particles")
    for j in (sim, sub, restack, before):
        j.queue()
    done(before)
    done(restack)
    out = restack.load_output("particles")
    assert len(out) == 150 and sorted(set(out.strings("blob/path"))) == [
        f"{restack.uid}/stacks/{restack.uid}_restacked_{k:05d}.mrcs" for k in range(3)]
    assert out["blob/idx"].tolist() == [i % 64 for i in range(150)]
    original = sub.load_output("particles")
    assert out["uid"].tolist() == original["uid"].tolist()  # input order kept
    u0 = project.refresh_size()
    recorded = sim.model.job_dir_size + sub.model.job_dir_size
    sim.clear()
    sub.clear()  # the passthrough of ctf and poses lives on in restack's own files
    u1 = project.refresh_size()
    assert (u0.jobs + u0.other) - (u1.jobs + u1.other) == recorded > 0
    after = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    after.connect("particles", restack.uid, "particles")
    after.queue()
    done(after)
    a, b = map_of(project, before), map_of(project, after)
    np.testing.assert_allclose(b, a, atol=1e-5 * np.abs(a).max())


def test_downsample_updates_box_pixel_size_shifts_and_keeps_the_resolution_it_can(api, project, master):
    sim = project.create_job("simulate_particles", params={"n_particles": 1500, "box": 32, "psize_A": 2.0,
                                                           "snr": 0, "seed": 1, "shift_sigma_px": 2.0})
    down = project.create_job("downsample_particles", params={"new_box": 16, "output_f16": True})
    down.connect("particles", sim.uid, "particles")
    rec = project.create_job("homo_reconstruct", params={"checkpoint_every_s": 0})
    rec.connect("particles", down.uid, "particles")
    for j in (sim, down, rec):
        j.queue()
    done(rec)
    out = down.load_output("particles")
    assert np.all(out["blob/psize_A"] == 4.0) and np.all(out["blob/shape"] == 16)
    assert np.all(out["alignments3D/psize_A"] == 2.0)  # shifts stay in the original pixels, and say so
    with mrcfile.open(project.dir / out.strings("blob/path")[0]) as m:
        assert m.header.mode == 12 and m.data.shape[1:] == (16, 16)
    truth = read_volume(project.dir / sim.load_output("true_volume").strings("map/path")[0])[0]
    truth_small = np.fft.ifftn(np.fft.ifftshift(np.fft.fftshift(np.fft.fftn(truth))[8:24, 8:24, 8:24])).real / 8
    curve = fsc(map_of(project, rec), truth_small, 4.0)
    # noise-free: the map matches the cropped truth to 0.8 of the new Nyquist
    shells = curve.freq_invA <= 0.8 * curve.freq_invA.max()
    assert curve.fsc[shells].min() > 0.9, curve.fsc
