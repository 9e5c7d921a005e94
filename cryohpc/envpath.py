"""Paths that name environment variables, expanded where a job runs (a node's
``$SLURM_TMPDIR``, ``${TMPDIR:-/tmp}``). Light on imports: the SSH helper uses it."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from .errors import UserError

_VARIABLE = re.compile(r"\$\{(?P<braced>[A-Za-z_]\w*)(?::-(?P<default>[^}]*))?\}|\$(?P<plain>[A-Za-z_]\w*)")


def expand_path_variables(path: str, environ: Mapping[str, str] | None = None) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR:-default}`` (the default when VAR is unset or
    empty, as in the shell) expanded, then ``~``.

    Raises:
        UserError: a variable without a default is unset, so the path cannot be known.
    """
    env = os.environ if environ is None else environ

    def one(m: re.Match) -> str:
        name = m.group("braced") or m.group("plain")
        value = env.get(name, "")
        if value:
            return value
        if m.group("default") is not None:
            return m.group("default")
        raise UserError(f"SSD cache path {path!r} names ${name}, which is unset (or empty) here; give a default as "
                        f"${{{name}:-/fallback/path}} or set it in the job's environment")
    return os.path.expanduser(_VARIABLE.sub(one, path))
