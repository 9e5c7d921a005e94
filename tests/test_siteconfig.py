"""Lane YAML: defaults, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from cryohpc.errors import ConfigError
from cryohpc.lanes import build_lanes
from cryohpc.lanes.siteconfig import load_lane_configs
from cryohpc.model import Resources


def test_local_lane_exists_without_any_file(tmp_path):
    lanes = load_lane_configs([tmp_path])
    assert list(lanes) == ["local"]
    cap = build_lanes([tmp_path])["local"].capacity()
    assert cap.cpus >= 1 and cap.ram_gb > 0


def test_lane_file_sets_resources(tmp_path):
    (tmp_path / "gpu.yaml").write_text("lanes:\n  - name: gpubox\n    cpus: 4\n    ram_gb: 8\n    gpus: [0, 1]\n")
    cap = build_lanes([tmp_path])["gpubox"].capacity()
    assert (cap.cpus, cap.ram_gb, cap.gpu_ids) == (4, 8, [0, 1])


@pytest.mark.parametrize("text, expect", [
    ("lanes:\n  - name: a\n    cpus: [oops\n", r"bad\.yaml:4: not valid YAML"),
    ("lanes:\n  - name: a\n    cpus: many\n", r"bad\.yaml:3: lanes\[0\]\.cpus: Input should be a valid integer"),
    ("lanes:\n  - name: a\n  - name: b\n    colour: blue\n", r"bad\.yaml:4: lanes\[1\]\.colour: Extra inputs"),
    ("lanes: 3\n", r"bad\.yaml:1: 'lanes:' must be a list"),
    ("lane: []\n", r"bad\.yaml: expected a mapping with a 'lanes:' and/or a 'workers:' list"),
    ("lanes:\n  - name: gpus\n    kind: ssh\nworkers:\n  - lane: gpus\n    host: h1\n    port: 99999\n",
     r"bad\.yaml:7: workers\[0\]\.port: Input should be less than or equal to 65535"),
    ("workers:\n  - host: h1\n", r"bad\.yaml:2: workers\[0\]: 'lane' names the node lane it serves"),
    ("workers:\n  - lane: local\n    host: h1\n",
     r"bad\.yaml:2: worker h1: lane 'local' is not a node lane of kind ssh \(those are: none\)"),
    ("lanes:\n  - name: gpus\n    kind: ssh\n    workers:\n      - host: h1\nworkers:\n  - lane: gpus\n    host: h1\n",
     r"bad\.yaml:7: worker h1 of lane 'gpus' is already defined at .*bad\.yaml"),
    ("lanes:\n  - name: gpus\n    kind: ssh\n    workers:\n      - host: h1\n        host_key_policy: yes\n",
     r"bad\.yaml:6: lanes\[0\]\.workers\.0\.host_key_policy: Input should be 'verify' or 'accept-new'"),
])
def test_bad_yaml_names_file_line_and_key(tmp_path, text, expect):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match=expect):
        load_lane_configs([tmp_path])


def test_duplicate_lane_names_are_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("lanes:\n  - name: x\n")
    (tmp_path / "b.yaml").write_text("lanes:\n  - name: x\n")
    with pytest.raises(ConfigError, match="already defined"):
        load_lane_configs([tmp_path])


def test_worker_targets_join_their_lane_from_any_file(tmp_path):
    (tmp_path / "a.yaml").write_text("lanes:\n  - name: boxes\n    kind: ssh\n    workers:\n"
                                     "      - {host: gpu01, gpus: [0, 1], cpus: 16, ram_gb: 64}\n")
    (tmp_path / "b.yaml").write_text("workers:\n  - {lane: boxes, host: gpu02, port: 2222, gpus: [0],"
                                     " cache_path: /scratch/c}\n")
    lanes = build_lanes([tmp_path])
    assert lanes["boxes"].targets() == {
        "gpu01": Resources(cpus=16, ram_gb=64, gpus=2, gpu_ids=[0, 1]),
        "gpu02:2222": Resources(cpus=1, ram_gb=4, gpus=1, gpu_ids=[0])}
    assert lanes["boxes"].cache_settings("gpu02:2222")["path"] == "/scratch/c"
    assert lanes["boxes"].cache_settings("gpu01") is None
