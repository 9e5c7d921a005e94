"""``cryohpc worker ...``: SSH worker targets of node lanes."""

from __future__ import annotations

import time
from typing import Any

import click

from .kit import Ctx, _parse_assignments, _table, pass_ctx


def _gpu_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(g) for g in text.split(",") if g.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of GPU ids") from None


def _row(c: Ctx, w) -> dict[str, Any]:
    state, since, detail = c.api.worker_state(w.lane, w.name)
    return {"lane": w.lane, "name": w.name, "user": w.user or "", "gpus": ",".join(map(str, w.gpus)) or "-",
            "cpus": w.cpus, "ram_gb": w.ram_gb, "ssd": w.cache_path or "-", "state": state,
            "since": time.strftime("%Y-%m-%d %H:%M", time.localtime(since)) if since else "", "detail": detail}


def one_worker(fn):
    """The options of a command about one worker: its name, and its lane where the name is ambiguous."""
    return click.argument("name")(click.option("--lane", help="the worker's lane, if the name is in several")(pass_ctx(fn)))


@click.group()
def worker() -> None:
    """Worker machines of SSH node lanes (CryoSPARC's 'cryosparcw connect')."""


@worker.command("connect")
@click.option("--host", required=True, help="host name or address of the worker")
@click.option("--port", type=int, help="SSH port (default 22)")
@click.option("--user", help="login name there (default: yours)")
@click.option("--lane", required=True, help="node lane the worker serves")
@click.option("--new-lane", is_flag=True, help="create the lane (kind ssh)")
@click.option("--gpus", help="GPU ids jobs may use, e.g. 0,1 (default: all nvidia-smi lists)")
@click.option("--cpus", type=int, help="CPU cores jobs may use (default: all)")
@click.option("--ram-gb", type=float, help="memory jobs may use (default: all)")
@click.option("--ssd-path", help="SSD cache folder on the worker")
@click.option("--no-ssd", is_flag=True, help="no SSD cache on this worker")
@click.option("--ssd-quota", type=float, help="most the cache may hold, MB")
@click.option("--ssd-reserve", type=float, help="free space the cache leaves, MB")
@click.option("--python", help="Python with cryohpc installed on the worker (default: the master's path)")
@click.option("--identity-file", help="SSH private key")
@click.option("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
@click.option("--accept-new-host-key", is_flag=True, help="record an unknown host key on first contact")
@click.option("--env", "env_pairs", multiple=True, help="environment for its workers, NAME=VALUE (repeatable)")
@click.option("--name", help="target name (default host[:port])")
@click.option("--update", is_flag=True, help="change a connected worker; options not given keep their values")
@click.option("--no-probe", is_flag=True, help="record without connecting (cores, memory, GPUs must be given)")
@pass_ctx
def worker_connect(c: Ctx, host, port, user, lane, new_lane, gpus, cpus, ram_gb, ssd_path, no_ssd, ssd_quota,
                   ssd_reserve, python, identity_file, known_hosts, accept_new_host_key, env_pairs, name, update,
                   no_probe) -> None:
    """Register a worker target, checking first over SSH that it answers, that its host
    key is trusted, that cryohpc runs there and that its SSD folder is writable."""
    if no_ssd and (ssd_path or ssd_quota is not None or ssd_reserve is not None):
        raise click.UsageError("--no-ssd excludes --ssd-path, --ssd-quota and --ssd-reserve")
    target, facts = c.api.connect_worker_reporting(
        lane, host, new_lane=new_lane, update=update, probe=not no_probe, no_ssd=no_ssd,
        port=port, user=user, gpus=_gpu_list(gpus), cpus=cpus, ram_gb=ram_gb, cache_path=ssd_path,
        cache_quota_mb=ssd_quota, cache_reserve_mb=ssd_reserve, python=python, identity_file=identity_file,
        known_hosts=known_hosts, host_key_policy="accept-new" if accept_new_host_key else None, name=name,
        env=_parse_assignments(env_pairs) or None)
    seen = f" ({facts['host']}, cryohpc {facts['cryohpc']})" if facts else " (not probed)"
    c.emit({"target": target.model_dump(mode="json"), "facts": facts},
           f"worker {target.name}{seen} {'updated in' if update else 'connected to'} lane {lane}: "
           f"{target.cpus} CPUs, {target.ram_gb:g} GB, GPUs {target.gpus or 'none'}, SSD {target.cache_path or 'none'}")


@worker.command("list")
@click.option("--lane", help="only this lane's workers")
@pass_ctx
def worker_list(c: Ctx, lane) -> None:
    """Workers with their resources and the state the master last saw."""
    rows = [_row(c, w) for w in c.api.workers(lane)]
    c.emit(rows, _table(rows, ["lane", "name", "user", "gpus", "cpus", "ram_gb", "ssd", "state", "since"]))


@worker.command("show")
@one_worker
def worker_show(c: Ctx, name, lane) -> None:
    w = c.api.find_worker(name, lane)
    row = _row(c, w)
    jobs = c.api.jobs_on_worker(w)
    data = {**w.model_dump(mode="json"), "state": row["state"], "since": row["since"], "detail": row["detail"],
            "jobs": jobs}
    lines = [f"worker {w.name} of lane {w.lane} (defined in {w.source})",
             f"ssh: {w.user + '@' if w.user else ''}{w.host}:{w.port}, known_hosts {w.known_hosts}, "
             f"host keys: {w.host_key_policy}",
             f"resources: {w.cpus} CPUs, {w.ram_gb:g} GB, GPUs {w.gpus or 'none'}",
             f"python: {w.python or '(the master’s)'}; SSD cache: {w.cache_path or 'none'}",
             f"state: {row['state']}" + (f" since {row['since']}" if row["since"] else "")
             + (f" ({row['detail']})" if row["detail"] else ""),
             f"running jobs: {', '.join(jobs) or 'none'}"]
    c.emit(data, "\n".join(lines))


@worker.command("remove")
@one_worker
def worker_remove(c: Ctx, name, lane) -> None:
    """Forget a worker (refused while jobs run on it)."""
    w = c.api.remove_worker(name, lane)
    c.emit({"removed": w.name, "lane": w.lane}, f"worker {w.name} removed from lane {w.lane}")


@worker.command("test")
@one_worker
def worker_test(c: Ctx, name, lane) -> None:
    """Connect now (host key checked), and report what the worker has."""
    w = c.api.find_worker(name, lane)
    t0 = time.monotonic()
    facts = c.api.probe_worker(w)
    ms = (time.monotonic() - t0) * 1000
    lines = [f"worker {w.name}: reachable, host key verified, projects root shared ({ms:.0f} ms)",
             f"host {facts['host']}, cryohpc {facts['cryohpc']}, python {facts['python']}",
             f"has {facts['cpus']} CPUs, {facts['ram_gb']:g} GB, GPUs {facts['gpus'] or 'none'}; "
             f"lane uses {w.cpus} CPUs, {w.ram_gb:g} GB, GPUs {w.gpus or 'none'}"]
    if "cache_free_mb" in facts:
        lines.append(f"SSD cache {w.cache_path}: writable, {facts['cache_free_mb']} MB free")
    c.emit({"ok": True, "ms": ms, "facts": facts}, "\n".join(lines))
