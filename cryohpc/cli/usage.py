"""``cryohpc usage``: what jobs cost, from their run histories (every lane kind: the
workers measure themselves), summed by project, user, lane and job type."""

from __future__ import annotations

import csv
import io
import sys
from datetime import datetime

import click

from ..errors import UserError
from .kit import Ctx, _table, pass_ctx


def _since(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UserError(f"--since {text!r} is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM)") from None


@click.command("usage")
@click.option("--project", help="only this project")
@click.option("--user", help="only jobs this user queued")
@click.option("--lane", help="only runs on this lane")
@click.option("--since", help="only runs that ended on or after this date (YYYY-MM-DD[THH:MM])")
@click.option("--by", default="project,user,lane,type", show_default=True,
              help="comma-separated grouping keys: project, user, lane, type")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout")
@pass_ctx
def usage(c: Ctx, project, user, lane, since, by, as_csv) -> None:
    """CPU-hours (used by the ranks, and held: wall × CPUs), GPU-hours (used, held), runs and
    jobs; and the scheduler's own figures where it keeps accounting (SLURM sacct)."""
    keys = tuple(k.strip() for k in by.split(",") if k.strip())
    rows = c.api.usage(project=project, user=user, lane=lane, since=_since(since), by=keys)
    fields = list(rows[0]) if rows else [*keys, "jobs", "runs"]  # the figures as usage.py sums them
    if as_csv:
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(out.getvalue())
        return
    shown = [{k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    c.emit(rows, _table(shown, fields) if rows else "no runs match")
