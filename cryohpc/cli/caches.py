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
    """Files in the cache and when they were last used; for a cluster lane (whose caches
    are on its nodes), per node what its last jobs recorded."""
    lane = c.api.lane(lane_name)
    settings = lane.cache_settings()
    if lane.cfg.type == "cluster":
        nodes = c.api.lane_cache_use(lane_name)
        rows = [{"node": host, "path": n["path"], "jobs": n["jobs"], "copied_mb": round(n["copied_bytes"] / 2**20, 1),
                 "hits": n["hits"], "evicted": n["evicted"], "last_job": n["last_job"],
                 "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(n["last_at"] or 0))}
                for host, n in sorted(nodes.items())]
        configured = settings["path"] if settings else None
        head = (f"lane {lane_name}: cache_path {configured} (resolved on each node when a job starts)"
                if configured else f"lane {lane_name}: no SSD cache (cache_path not set)")
        c.emit({"lane": lane_name, "cache_path": configured, "nodes": rows},
               head + "\nas its last jobs recorded, per node:\n" + _table(
                   rows, ["node", "path", "jobs", "copied_mb", "hits", "evicted", "last_job", "last_used"]))
        return
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
