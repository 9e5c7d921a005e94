"""Every reader of files a user or a worker hands us, fuzzed: valid files cut, flipped and
spliced by hypothesis. The only exceptions that may escape are cryohpc's own, with a
message that names the file; a reader that answers must answer something sane.
``scripts/fuzz_readers.py`` runs the same fuzzers longer and counts the outcomes."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryohpc.compute.io_mrc import read_images, read_info, read_volume
from cryohpc.compute.io_star import read_particle_star
from cryohpc.dataset import Dataset
from cryohpc.errors import CryohpcError
from cryohpc.events import read_events
from cryohpc.jobfile import JobFile, OutputSpecFile
from cryohpc.lanes.siteconfig import load_site_config
from cryohpc.resources import Resources
from cryohpc.sampledata import write_sample_particles, write_sample_volume

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@st.composite
def mutated(draw, original: bytes) -> bytes:
    """``original`` cut short, with bytes flipped, spliced in or cut out."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["cut", "flip", "insert", "delete", "zero"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "cut":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "zero" and data:
            n = draw(st.integers(1, 16))
            data[at:at + n] = bytes(min(n, len(data) - at))
    return bytes(data)


@functools.cache
def samples() -> dict[str, bytes]:
    """One valid file of each kind, made once."""
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="cryohpc-fuzz-"))
    ds = Dataset.allocate(5, [("blob/path", "S20"), ("blob/idx", "u4"), ("ctf/df1_A", "f4"),
                              ("alignments3D/pose", "f4", (3,))])
    ds["blob/path"] = [b"J1/a.mrcs"] * 5
    ds.save(root / "np.cs")
    ds.save(root / "csdat.cs", compression="lz4")
    write_sample_volume(root / "v.mrc", box=8)
    sample = write_sample_particles(root / "star", n=6, box=8, n_stacks=1)
    JobFile(instance_uid="x", project_uid="P1", job_uid="J1", type="t", params={"a": 1}, project_dir=str(root),
            job_dir=str(root), outputs=[OutputSpecFile(name="o", type="particle")], resources=Resources(),
            heartbeat_interval_s=1.0, created_at=time.time()).write(root)
    (root / "events.jsonl").write_text(
        '{"t": 1, "type": "started", "pid": 3, "host": "h"}\n{"t": 2, "type": "progress", "done": 1, "total": 2}\n'
        '{"t": 3, "type": "output", "group": "o", "results": [{"name": "blob", "path": "J1/x.cs"}]}\n')
    (root / "lanes.yaml").write_text(
        "lanes:\n  - name: s\n    type: cluster\n    kind: slurm\n    script_template: slurm.sh.j2\n"
        "    custom_vars:\n      - {name: partition, type: str, default: gpu}\n"
        "  - {name: n, type: node, kind: local, cpus: 2}\n")
    return {"cs": (root / "np.cs").read_bytes(), "csdat": (root / "csdat.cs").read_bytes(),
            "mrc": (root / "v.mrc").read_bytes(), "star": sample.star.read_bytes(),
            "mrcs": next((root / "star" / "Particles").glob("*.mrcs")).read_bytes(),
            "job.json": (root / "job.json").read_bytes(), "events": (root / "events.jsonl").read_bytes(),
            "yaml": (root / "lanes.yaml").read_bytes()}


def only_ours(fn, path: Path):
    """Run a reader; a cryohpc error must name the file. Returns the answer or None."""
    try:
        return fn(path)
    except CryohpcError as err:
        assert str(err) and (str(path) in str(err) or path.name in str(err)), err
        return None


def kind_of(name: str):
    return st.data().map(lambda d: d.draw(mutated(samples()[name])))


@FUZZ
@given(st.sampled_from(["cs", "csdat"]), st.data())
def test_cs_readers(tmp_path_factory, which, data):
    path = tmp_path_factory.mktemp("cs") / "f.cs"
    path.write_bytes(data.draw(mutated(samples()[which])))
    ds = only_ours(Dataset.load, path)
    if ds is not None:
        assert len(ds) >= 0 and "uid" in ds.fields()
        ds.array.tobytes()  # every row readable


@FUZZ
@given(st.sampled_from(["mrc", "mrcs"]), st.data())
def test_mrc_readers(tmp_path_factory, which, data):
    path = tmp_path_factory.mktemp("mrc") / f"f.{which}"
    path.write_bytes(data.draw(mutated(samples()[which])))
    info = only_ours(read_info, path)
    if info is not None:
        images = only_ours(read_images, path)
        if images is not None:
            assert images.shape[0] == info.shape[0]
        only_ours(read_volume, path)


@FUZZ
@given(st.data())
def test_star_reader(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("star") / "p.star"
    path.write_bytes(data.draw(mutated(samples()["star"])))
    table = only_ours(read_particle_star, path)
    if table is not None:
        assert all(len(c) == len(table) for c in table.columns.values())


@FUZZ
@given(st.data())
def test_site_config_reader(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("yaml") / "lanes.yaml"
    path.write_bytes(data.draw(mutated(samples()["yaml"])))
    only_ours(load_site_config, path)


@FUZZ
@given(st.data())
def test_job_file_reader(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("jobjson")
    (folder / "job.json").write_bytes(data.draw(mutated(samples()["job.json"])))
    only_ours(JobFile.read, folder / "job.json") if False else only_ours(lambda p: JobFile.read(p.parent),
                                                                         folder / "job.json")


@FUZZ
@given(st.data())
def test_events_reader_never_raises(tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("events")
    raw = data.draw(mutated(samples()["events"]))
    (folder / "events.jsonl").write_bytes(raw)
    events, offset = read_events(folder)
    assert offset == (raw.rfind(b"\n") + 1 if b"\n" in raw else 0)
    assert all(e.type for e in events)


def test_the_fuzzers_start_from_files_the_readers_accept(tmp_path):
    """Unmutated, every sample reads: a fuzzer that only ever sees refusals tests nothing."""
    for name, fn, suffix in (("cs", Dataset.load, ".cs"), ("csdat", Dataset.load, ".cs"), ("mrc", read_volume, ".mrc"),
                             ("star", read_particle_star, ".star"), ("yaml", load_site_config, ".yaml")):
        path = tmp_path / f"{name}{suffix}"
        path.write_bytes(samples()[name])
        assert fn(path) is not None
    (tmp_path / "job.json").write_bytes(samples()["job.json"])
    assert JobFile.read(tmp_path).job_uid == "J1"
    assert json.loads(samples()["events"].splitlines()[0])["type"] == "started"
    assert np.all(np.isfinite(read_volume(tmp_path / "mrc.mrc")[0]))
