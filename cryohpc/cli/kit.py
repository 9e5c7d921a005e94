"""What every command module shares: the context (the api, output mode), tables, and the
parsing of the small text forms commands take."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from ..text import shown, shown_lines


def _table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[shown(str(r.get(c, ""))) if r.get(c) is not None else "" for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


class Ctx:
    def __init__(self, home: str | None, as_json: bool):
        self.home, self.as_json = home, as_json
        self._api = None

    @property
    def api(self):
        if self._api is None:
            from ..api import Api

            self._api = Api(self.home)
        return self._api

    def emit(self, data: Any, text: str | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str))
        elif text is not None:  # messages and reasons from programs and schedulers: no terminal codes
            click.echo(shown_lines(text))


pass_ctx = click.make_pass_decorator(Ctx)


def one_job(fn):
    """The arguments of a command about one job: its project and job uids."""
    return click.argument("project_uid")(click.argument("job_uid")(pass_ctx(fn)))


def _dump(model) -> dict[str, Any]:
    return model.model_dump(mode="json")


def _parse_assignments(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not of the form name=value")
        out[key.strip()] = value
    return out


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


def _parse_source(text: str, parts: int) -> list[str]:
    bits = text.split(".")
    if len(bits) != parts or not all(bits):
        shape = "J1.group" if parts == 2 else "J1.group.result"
        raise click.BadParameter(f"{text!r} is not of the form {shape}")
    return bits


def confirm_or_refuse(yes: bool, refusal: str, prompt: str) -> None:
    """Go ahead with --yes; ask on a terminal; elsewhere (scripts, pipes) refuse with
    ``refusal``, which names the flag that would go ahead."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise click.UsageError(refusal)
    click.confirm(prompt, abort=True, err=True)

