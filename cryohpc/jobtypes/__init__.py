"""The registry of job types; importing this module registers the built-in ones."""

from __future__ import annotations

from pathlib import Path

from ..errors import NotFoundError
from .site import SiteJobTypes
from .spec import InputGroupSpec, JobTypeSpec, OutputGroupSpec, ParamSpec, SlotSpec

_REGISTRY: dict[str, JobTypeSpec] = {}
_SITE = SiteJobTypes()


def register(spec: JobTypeSpec) -> JobTypeSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"job type {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_jobtype(name: str) -> JobTypeSpec:
    """Raises:
    NotFoundError: no such job type (the message lists the known ones).
    """
    site = _SITE.specs(_REGISTRY)
    found = _REGISTRY.get(name) or site.get(name)
    if found is None:
        broken = "".join(f"\n  job type declaration problem: {p}" for p in _SITE.problems)
        raise NotFoundError(f"unknown job type {name!r} (known: {', '.join(sorted({*_REGISTRY, *site}))}){broken}")
    return found


def all_jobtypes() -> list[JobTypeSpec]:
    return sorted([*_REGISTRY.values(), *_SITE.specs(_REGISTRY).values()], key=lambda s: (s.category, s.name))


def use_site_jobtypes(folder: Path | None) -> None:
    """Read site declarations from ``folder`` (``<home>/jobtypes``) from now on, again
    whenever a file there changes (a running master sees new ones without a restart)."""
    _SITE.folder = folder


def jobtype_problems() -> list[str]:
    """One message (file, line, problem) per site declaration that could not be loaded."""
    _SITE.specs(_REGISTRY)
    return list(_SITE.problems)


from . import builtin  # noqa: E402,F401  (registers the built-in types)
from .declared import SHIPPED_DIR, load_folder  # noqa: E402

_shipped, _shipped_problems = load_folder(SHIPPED_DIR)
if _shipped_problems:  # a shipped declaration that does not load is our bug, not the site's
    raise RuntimeError("; ".join(_shipped_problems))
for _spec in _shipped:
    register(_spec)


def _load_plugins() -> None:
    """Modules named in ``$CRYOHPC_PLUGINS`` (comma-separated) register site job types."""
    import importlib
    import os

    for name in filter(None, (m.strip() for m in os.environ.get("CRYOHPC_PLUGINS", "").split(","))):
        importlib.import_module(name)


_load_plugins()

__all__ = [
    "InputGroupSpec",
    "JobTypeSpec",
    "OutputGroupSpec",
    "ParamSpec",
    "SlotSpec",
    "all_jobtypes",
    "get_jobtype",
    "jobtype_problems",
    "register",
    "use_site_jobtypes",
]
