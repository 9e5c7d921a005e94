"""``cryohpc backup``, ``restore`` and ``doctor``: keeping an instance whole."""

from __future__ import annotations

import sys

import click

from .kit import Ctx, pass_ctx


@click.command()
@click.argument("dest", type=click.Path(dir_okay=False))
@pass_ctx
def backup(c: Ctx, dest) -> None:
    """Copy the database to DEST (safe while the master runs)."""
    path = c.api.backup(dest)
    c.emit({"backup": str(path)}, f"database backed up to {path}")


@click.command()
@click.argument("source", type=click.Path(dir_okay=False))
@pass_ctx
def restore(c: Ctx, source) -> None:
    """Replace the database with the backup SOURCE (stop the master first)."""
    c.api.restore(source)
    c.emit({"restored": source}, f"database restored from {source}")


@click.command()
@pass_ctx
def doctor(c: Ctx) -> None:
    """Check the database, site configs and job directories; say what would be repaired."""
    r = c.api.doctor()
    lines = [f"ok: {x}" for x in r.ok] + [f"problem: {x}" for x in r.problems] + [
        f"would repair: {x}" for x in r.would_repair]
    c.emit({"ok": r.ok, "problems": r.problems, "would_repair": r.would_repair}, "\n".join(lines))
    sys.exit(1 if r.problems else 0)
