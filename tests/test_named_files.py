"""Files a user or an admin names are read only when they are regular files of bounded
size: ``/dev/zero``, a FIFO or a folder in their place is named and refused at once, by
the CLI and by a master that finds one among its site configs or declarations."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import cli

from cryohpc.errors import ConfigError, InputFileError
from cryohpc.named_files import read_named_file


@pytest.fixture
def odd_files(tmp_path) -> dict[str, tuple[Path, str]]:
    """Things that are not regular files, and what the refusal calls each."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "zero.yaml").symlink_to("/dev/zero")
    return {"fifo": (fifo, "not a regular file"), "device": (tmp_path / "zero.yaml", "not a regular file"),
            "folder": (tmp_path / "folder.yaml", "a folder"), "missing": (tmp_path / "none.yaml", "no such file")}


def test_read_named_file_refuses_what_is_not_a_bounded_regular_file(odd_files, tmp_path):
    for path, says in odd_files.values():
        with pytest.raises(ConfigError, match=f"^{path}: {says}; a thing was expected$"):
            read_named_file(path, "a thing", ConfigError)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (2**20 + 1))
    with pytest.raises(InputFileError, match=f"^{big}: larger than 1 MB, too large for a thing$"):
        read_named_file(big, "a thing", limit_bytes=2**20)
    assert read_named_file(big, "a thing", limit_bytes=2**20 + 1) == b"x" * (2**20 + 1)


def test_the_cli_names_a_device_or_fifo_given_as_a_config_and_returns(odd_files, api):
    home = api.instance.home
    for kind in ("fifo", "device"):
        path, says = odd_files[kind]
        for command in (("lane", "add"), ("lane", "validate"), ("jobtypes", "validate")):
            proc = cli(home, *command, str(path), timeout=60)  # 'jobtypes validate' reports on stdout
            out = proc.stdout + proc.stderr  # the file is named as given or as the link resolves
            assert proc.returncode != 0 and any(f"{p}: {says}" in out for p in (path, path.resolve())), (command, out)
            assert "Traceback" not in proc.stderr


def test_a_device_among_the_site_configs_and_declarations_costs_only_itself(odd_files, api):
    """The master reads every file in site-configs/ and jobtypes/: one that would never
    end is reported as broken, and the others still load."""
    (api.instance.paths.site_configs / "zero.yaml").symlink_to("/dev/zero")
    os.mkfifo(api.instance.paths.jobtypes / "fifo.yaml")
    assert "local" in api.lanes()
    assert any("zero.yaml: not a regular file" in p for p in api.lane_problems())
    assert "homo_reconstruct" in {s.name for s in api.jobtypes()}


def test_an_export_whose_manifest_is_a_device_is_refused(api, project, tmp_path):
    where = tmp_path / "export"
    (where / "files").mkdir(parents=True)
    (where / "job.json").write_text(json.dumps({"format": "cryohpc-exported-job"}))
    (where / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(InputFileError, match=f"{where / 'manifest.json'}: not a regular file"):
        project.import_job(where)
