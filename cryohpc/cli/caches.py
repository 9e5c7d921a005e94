"""``cryohpc cache ...``: the SSD cache of a node lane on this machine."""

from __future__ import annotations

import time

import click

from .kit import Ctx, _table, pass_ctx


@click.group()
def cache() -> None:
    """The SSD cache of a node lane on this machine."""


@cache.command("status")
@click.option("--lane", "lane_name", default="local", show_default=True)
@pass_ctx
def cache_status(c: Ctx, lane_name) -> None:
    """Files in the cache, their size and when they were last used."""
    cache_ = c.api.lane_cache(lane_name)
    entries = sorted(cache_.entries(), key=lambda e: -e.get("last_used", 0))
    rows = [{"source": e["source"], "mb": round(e["size"] / 2**20, 1),
             "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(e.get("last_used", 0)))} for e in entries]
    total = sum(e["size"] for e in entries) / 2**20
    c.emit({"path": str(cache_.root), "files": rows, "used_mb": total},
           f"{cache_.root}: {len(rows)} file(s), {total:.1f} MB\n" + _table(rows, ["source", "mb", "last_used"]))


@cache.command("clear")
@click.option("--lane", "lane_name", default="local", show_default=True)
@pass_ctx
def cache_clear(c: Ctx, lane_name) -> None:
    """Remove every cached file that no running job is using."""
    cache_ = c.api.lane_cache(lane_name)
    removed = cache_.clear()
    c.emit({"removed": removed}, f"{cache_.root}: {removed} file(s) removed ({len(cache_.entries())} in use kept)")
