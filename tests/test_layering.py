"""The rooms' import rules (docs/architecture.md), read from the source: a change that
makes the CLI reach past the api, the worker contract import the master's records, or
the scheduler import a lane backend fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "cryohpc"


def imports_of(path: Path) -> set[str]:
    """Absolute names of the cryohpc modules a file imports (anywhere in it)."""
    module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
            out.update(n for n in names if n.startswith("cryohpc"))
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cryohpc"))
    return out


def files(*parts: str) -> list[Path]:
    found = []
    for part in parts:
        p = PKG / part
        found += sorted(p.rglob("*.py")) if p.is_dir() else [p.with_suffix(".py")]
    return found


def reaches(path: Path, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(n for n in imports_of(path) if any(n == f or n.startswith(f + ".") for f in forbidden))


RULES = [
    # (files, forbidden imports, why)
    (("cli",), ("cryohpc.store", "cryohpc.scheduler", "cryohpc.master", "cryohpc.lanes", "cryohpc.targets",
                "cryohpc.cache", "cryohpc.actions", "cryohpc.builder", "cryohpc.instance", "cryohpc.jobtypes",
                "cryohpc.dataset", "cryohpc.model"), "the CLI talks only to api"),
    (("jobfile", "events", "exitcode", "resources", "jobtypes/spec", "jobrun"),
     ("cryohpc.model", "cryohpc.store", "cryohpc.scheduler", "cryohpc.api"), "the worker contract is the master's peer"),
    (("jobtypes",), ("cryohpc.worker", "cryohpc.store", "cryohpc.scheduler"), "job types see jobrun, not the worker"),
    (("worker", "jobrun"), ("cryohpc.store", "cryohpc.scheduler", "cryohpc.lanes"), "the worker side never sees the master"),
    (("scheduler",), ("cryohpc.lanes.local", "cryohpc.lanes.workers", "cryohpc.lanes.cluster", "cryohpc.lanes.ssh",
                      "cryohpc.lanes.runner", "cryohpc.lanes.schedulers"), "the scheduler knows lanes by their protocol"),
    (("scheduler/placement",), ("cryohpc.store", "cryohpc.lanes", "cryohpc.instance"), "placement is pure"),
    (("lanes",), ("cryohpc.scheduler", "cryohpc.store", "cryohpc.jobtypes", "cryohpc.api", "cryohpc.worker"),
     "lanes know nothing of jobs' types or the database"),
]


@pytest.mark.parametrize("parts,forbidden,why", RULES, ids=[r[2] for r in RULES])
def test_import_rules(parts, forbidden, why):
    broken = {str(f.relative_to(PKG)): bad for f in files(*parts) if (bad := reaches(f, forbidden))}
    assert not broken, f"{why}: {broken}"


def test_the_rule_reader_sees_relative_and_nested_imports(tmp_path):
    """The checker itself: a nested relative import is found (so the rules can fail)."""
    probe = PKG / "cli" / "jobs.py"
    assert "cryohpc.api.JobStatus" in imports_of(probe)
    assert any(n.startswith("cryohpc.api") for n in imports_of(PKG / "cli" / "kit.py"))  # imported inside a function
