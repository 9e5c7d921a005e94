"""The worker contract: job.json in, events.jsonl and outputs out, no database."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from cryohpc.dataset import Dataset
from cryohpc.events import EventWriter, read_events
from cryohpc.jobfile import JobFile, OutputSpecFile
from cryohpc.model import Resources
from cryohpc.sampledata import write_sample_volume


def test_worker_runs_from_job_json_alone(tmp_path):
    project = tmp_path / "proj"
    job_dir = project / "J5"
    job_dir.mkdir(parents=True)
    vol = tmp_path / "v.mrc"
    write_sample_volume(vol, box=8, psize_A=1.25)
    JobFile(instance_uid="x", project_uid="P3", job_uid="J5", type="import_volume",
            params={"volume_path": str(vol), "volume_type": "mask", "psize_A": None},
            project_dir=str(project), job_dir=str(job_dir),
            outputs=[OutputSpecFile(name="imported_volume_1", type="volume")],
            resources=Resources(), heartbeat_interval_s=0.05, created_at=time.time()).write(job_dir)
    proc = subprocess.run([sys.executable, "-m", "cryohpc.worker.main", "--job-dir", str(job_dir)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    events, _ = read_events(job_dir)
    kinds = [e.type for e in events]
    assert kinds[0] == "started" and kinds[-1] == "completed"
    out = next(e for e in events if e.type == "output")
    assert out.group == "imported_volume_1" and out.num_items == 1
    assert [r.name for r in out.results] == ["mask"]
    ds = Dataset.load(project / out.results[0].path)
    assert ds.strings("mask/path") == ["J5/imported/J5_v.mrc"]
    assert float(ds["mask/psize_A"][0]) == 1.25


def test_worker_reports_a_broken_job_json(tmp_path):
    (tmp_path / "job.json").write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "cryohpc.worker.main", "--job-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    events, _ = read_events(tmp_path)
    assert events[-1].type == "failed" and "malformed job.json" in events[-1].message


def test_reader_waits_for_complete_lines_and_survives_garbage(tmp_path):
    w = EventWriter(tmp_path)
    w.log("one")
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b'{"type": "log", "text": "half')
    events, offset = read_events(tmp_path)
    assert [e.text for e in events] == ["one"]
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(b' done"}\nnot json at all\n{"type": "from_the_future"}\n{"type": "output"}\n')
    more, offset2 = read_events(tmp_path, offset)
    assert more[0].text == "half done"
    assert len(more) == 4 and all(e.level == "warning" and "unreadable event line" in e.text for e in more[1:])
    assert "from_the_future" in more[2].text and "group" in more[3].text  # unknown type; a field missing
    assert read_events(tmp_path, offset2) == ([], offset2)
    assert json.loads((tmp_path / "events.jsonl").read_text().splitlines()[0])["type"] == "log"
