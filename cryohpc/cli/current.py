"""``cryohpc jobs current``: CryoSPARC's Current Jobs view, every project's jobs in
progress grouped by lane, with a footer of the active targets; ``--watch`` redraws it in
place, as ``watch squeue`` does."""

from __future__ import annotations

import time
from collections import defaultdict

import click

from .jobs import in_status_for
from .kit import Ctx, _dump, _table, pass_ctx

CLEAR = "\x1b[H\x1b[2J"


@click.group()
def jobs() -> None:
    """Jobs across every project."""


def _where(j) -> str:
    res = j.run.resources
    return (res.target if res and res.target else "") or j.run.host or ""


def render(c: Ctx, lane: str | None, queued: bool, active: bool) -> tuple[list, str]:
    every = c.api.current_jobs(lane=lane)
    shown = [j for j in every if (j.status.active and active) or (not j.status.active and queued)]
    by_lane: dict[str, list] = defaultdict(list)
    for j in every:
        by_lane[j.queued_lane or "local"].append(j)
    blocks = []
    for name, group in sorted(by_lane.items()):
        mine = [j for j in group if j in shown]
        running = sum(j.status.active for j in group)
        header = (f"lane {name}: {running} active, {len(group) - running} queued "
                  f"({len(mine)} of {len(group)} shown)")
        rows = [{"job": f"{j.project_uid} {j.uid}", "type": j.type,
                 "status": j.status.value if j.status.active else f"queued ({j.queue_status.value if j.queue_status else ''})",
                 "priority": j.priority,
                 "gpus": ",".join(map(str, (j.run.resources.gpu_ids if j.run.resources else []))) or "-",
                 "where": _where(j) or "-", "creator": j.created_by or "-", "in status": in_status_for(j)}
                for j in mine]
        blocks.append(header + ("\n" + _table(rows, list(rows[0])) if rows else ""))
    targets: dict[str, list[str]] = defaultdict(list)
    for j in every:
        if j.status.active:
            targets[f"{j.queued_lane or 'local'}/{_where(j) or '?'}"].append(f"{j.project_uid} {j.uid}")
    footer = "active targets: " + ("; ".join(f"{t}: {', '.join(js)}" for t, js in sorted(targets.items())) or "none")
    text = "\n\n".join(blocks) if blocks else "no jobs in progress"
    return shown, f"{text}\n\n{footer}"


@jobs.command("current")
@click.option("--lane", help="only this lane")
@click.option("--queued", "only_queued", is_flag=True, help="only queued jobs")
@click.option("--active", "only_active", is_flag=True, help="only launched and running jobs")
@click.option("--watch", is_flag=True, help="redraw every --interval seconds until interrupted")
@click.option("--interval", type=click.FloatRange(min=0.2), default=2.0, show_default=True)
@click.option("--count", type=click.IntRange(min=1), hidden=True, help="with --watch: stop after N redraws")
@pass_ctx
def jobs_current(c: Ctx, lane, only_queued, only_active, watch, interval, count) -> None:
    """Jobs in progress across all projects, grouped by lane (CryoSPARC's Current Jobs)."""
    queued, active = (only_queued or not only_active), (only_active or not only_queued)
    if not watch or c.as_json:
        shown, text = render(c, lane, queued, active)
        c.emit([_dump(j) for j in shown], text)
        return
    drawn = 0
    while count is None or drawn < count:
        _, text = render(c, lane, queued, active)
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{CLEAR}Every {interval:g}s: cryohpc jobs current{' --lane ' + lane if lane else ''}   {stamp}\n\n"
                   f"{text}", nl=True)
        drawn += 1
        if count is None or drawn < count:
            time.sleep(interval)
