"""``cryohpc master ...``: start, stop and inspect the master."""

from __future__ import annotations

import logging
import sys

import click

from .kit import Ctx, pass_ctx


@click.group()
def master() -> None:
    """Start, stop and inspect the master that launches and follows jobs."""


@master.command("start")
@pass_ctx
def master_start(c: Ctx) -> None:
    """Start a master in the background (one per instance)."""
    pid = c.api.start_master()
    c.emit({"pid": pid}, f"master running (pid {pid}); log: {c.api.instance.paths.master_log}")


@master.command("stop")
@pass_ctx
def master_stop(c: Ctx) -> None:
    """Stop the master; running jobs go on and are picked up by the next master."""
    pid = c.api.stop_master()
    c.emit({"stopped": pid}, "no master was running" if pid is None else f"master (pid {pid}) stopped")


@master.command("status")
@pass_ctx
def master_status(c: Ctx) -> None:
    pid = c.api.master_pid()
    if pid is None:
        text = "master not running"
    elif pid < 0:  # the lock is held, the pid file is gone (deleted by hand, or the master is starting)
        text = (f"a master holds the instance lock, but its pid file {c.api.instance.paths.master_pid} is missing; "
                "if none is starting, find it with: fuser " + str(c.api.instance.paths.master_lock))
    else:
        text = f"master running (pid {pid})"
    c.emit({"running": pid is not None, "pid": pid if pid is None or pid > 0 else None}, text)
    sys.exit(0 if pid is not None else 1)


@master.command("run")
@pass_ctx
def master_run(c: Ctx) -> None:
    """Run the master in the foreground (for scripts, tests and service managers)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    c.api.run_master()
