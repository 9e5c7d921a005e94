"""The registry of job types; importing this module registers the built-in ones."""

from __future__ import annotations

from ..errors import NotFoundError
from .spec import InputGroupSpec, JobTypeSpec, OutputGroupSpec, ParamSpec, SlotSpec

_REGISTRY: dict[str, JobTypeSpec] = {}


def register(spec: JobTypeSpec) -> JobTypeSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"job type {spec.name!r} registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_jobtype(name: str) -> JobTypeSpec:
    """Raises:
    NotFoundError: no such job type (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise NotFoundError(f"unknown job type {name!r} (known: {', '.join(sorted(_REGISTRY))})") from None


def all_jobtypes() -> list[JobTypeSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: (s.category, s.name))


from . import builtin  # noqa: E402,F401  (registers the built-in types)


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
    "register",
]
