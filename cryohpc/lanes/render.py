"""Jinja2 rendering of submission scripts and scheduler commands.

Every value a template prints is quoted (``shell_quote``) unless it is ``Raw``: a
command line cryohpc built itself, already quoted piece by piece, or a setting the site
admin wrote (``cache_path`` may be ``$SLURM_TMPDIR/cryohpc``, expanded on the node).
A user's value trying ``; rm -rf ~`` therefore arrives as one literal word.
Values are double-quoted with ``\\ " $ ` `` escaped, not single-quoted: bash reads both
forms alike, but ``sbatch`` reads ``#SBATCH`` lines with its own parser, where a backslash
escapes even inside single quotes (``--account='\\'`` is an unmatched quote there). The
double-quoted form means the same text to bash and to sbatch.
Quoting cannot protect a comment line (``#SBATCH --partition=...``): a line break in a
value would end it and start a command. So every value, ``Raw`` or not, must be one line
without control characters; the renderer refuses any other, naming the variable, as the
last line of defence behind the checks where values enter.
Undefined variables are errors (StrictUndefined), at load time, not at submit time.
"""

from __future__ import annotations

import re
import shlex
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2

from ..errors import ConfigError
from ..text import line_problem

# shipped templates: the repository's templates/, packaged through the cryohpc/templates link
TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"


class Raw(str):
    """A string that is already shell-safe; printed as it is."""


_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+")


def shell_quote(text: str) -> str:
    """``text`` as one word for bash and for sbatch's directive parser alike."""
    if _PLAIN.fullmatch(text):
        return text
    return '"' + re.sub(r'([\\"$`])', r"\\\1", text) + '"'


class UnsafeValue(ValueError):
    """A value that would print more than one line into a script or command."""


def _finalizer(quote: Callable[[str], str]) -> Callable[[Any], str]:
    def finalize(value: Any) -> str:
        if isinstance(value, str) and (problem := line_problem(value)):
            raise UnsafeValue(f"a printed value has {problem}: {value[:80]!r}")
        if isinstance(value, Raw):
            return value
        if value is None:
            return quote("")
        if isinstance(value, bool):
            return "true" if value else "false"
        return quote(str(value))
    return finalize


def environment(template_dirs: list[Path], quote: Callable[[str], str] = shell_quote) -> jinja2.Environment:
    """``quote``: ``shell_quote`` for scripts and commands bash or sbatch read;
    ``shlex.quote`` for argument lists split by ``shlex`` (declared programs)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([str(d) for d in template_dirs]),
        undefined=jinja2.StrictUndefined,
        finalize=_finalizer(quote),
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters["unquoted"] = lambda v: Raw(str(v))  # explicit opt-out, for site admins
    return env


def _template_line(err: BaseException, name: str) -> int | None:
    """Line of the template where rendering failed (Jinja2 maps template frames)."""
    if getattr(err, "lineno", None):
        return err.lineno
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        if frame.filename.endswith(name) or frame.filename == "<template>":
            return frame.lineno
    return None


def render(env: jinja2.Environment, where: str, variables: dict[str, Any], *, name: str | None = None,
           source: str | None = None) -> str:
    """Render a template file (``name``) or a template string (``source``).

    Raises:
        ConfigError: naming ``where`` (lane and file or key), the line and the problem.
    """
    for key, value in variables.items():
        if isinstance(value, str) and (problem := line_problem(value)):
            raise ConfigError(f"{where}: variable {key!r} has {problem}; refused (values must be one line "
                              "without control characters)")
    try:
        template = env.get_template(name) if name else env.from_string(source or "")
        return template.render(**variables)
    except jinja2.TemplateNotFound as err:
        raise ConfigError(f"{where}: template {err.name!r} not found (looked in "
                          f"{', '.join(env.loader.searchpath)})") from err
    except jinja2.UndefinedError as err:
        line = _template_line(err, name or "<template>")
        raise ConfigError(f"{where}{f':{line}' if line else ''}: {err.message} "
                          f"(known variables: {', '.join(sorted(variables))})") from err
    except jinja2.TemplateSyntaxError as err:
        raise ConfigError(f"{where}:{err.lineno}: template syntax error: {err.message}") from err
    except (TypeError, ValueError) as err:
        line = _template_line(err, name or "<template>")
        raise ConfigError(f"{where}{f':{line}' if line else ''}: {err}") from err


def is_script_code(line: str) -> bool:
    """A template line bash runs or the scheduler reads: not a shell comment, but
    scheduler directives (``#SBATCH``, ``#PBS``, ``#$``) and ``#!`` count."""
    text = line.lstrip()
    return not text.startswith("#") or text.startswith(("#SBATCH", "#PBS", "#$", "#!"))


def shell_join(argv: list[str]) -> Raw:
    return Raw(shlex.join(argv))
