"""Lane YAML: defaults, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from cryohpc.errors import ConfigError
from cryohpc.lanes import build_lanes
from cryohpc.lanes.siteconfig import load_lane_configs


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
    ("lanes: 3\n", r"bad\.yaml: expected a mapping with a 'lanes:' list"),
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
