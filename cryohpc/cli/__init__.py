"""``cryohpc``: the command line, a thin layer over :mod:`cryohpc.api` (the only module it
talks to), one module per noun.

Tables for people, ``--json`` for scripts. Errors print one line (``error: ...``) and
exit with status 2; ``job wait`` exits 0 only when the job completed.
"""

from __future__ import annotations

import click

from ..errors import CryohpcError
from ..text import shown_lines
from . import (
    caches,
    cleanup,
    current,
    datasets,
    job_actions,  # noqa: F401 - adds the job actions to the job group
    jobs,
    jobtypes,
    lanes,
    maintenance,
    master,
    projects,
    usage,
    workers,
)
from .kit import Ctx, pass_ctx

EXIT_ERROR = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--home", envvar="CRYOHPC_HOME", type=click.Path(file_okay=False),
              help="instance directory (default $CRYOHPC_HOME or ~/.cryohpc)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.version_option(package_name="cryohpc")
@click.pass_context
def cli(ctx: click.Context, home: str | None, as_json: bool) -> None:
    """cryohpc: cryo-EM processing on HPC clusters."""
    ctx.obj = Ctx(home, as_json)


@cli.command()
@click.option("--projects-root", type=click.Path(file_okay=False), help="default parent of project directories")
@click.option("--poll-interval-s", type=float, help="master loop period")
@click.option("--heartbeat-interval-s", type=float, help="worker heartbeat period")
@click.option("--heartbeat-timeout-s", type=float, help="silence after which a job is failed")
@pass_ctx
def init(c: Ctx, projects_root, poll_interval_s, heartbeat_interval_s, heartbeat_timeout_s) -> None:
    """Create an instance (database, config) at --home."""
    from ..api import Api

    settings = {k: v for k, v in dict(poll_interval_s=poll_interval_s, heartbeat_interval_s=heartbeat_interval_s,
                                      heartbeat_timeout_s=heartbeat_timeout_s).items() if v is not None}
    api = Api.init(c.home, projects_root, **settings)
    c._api = api
    cfg = api.instance.config
    c.emit({"home": str(api.instance.home), **cfg.model_dump()},
           f"instance at {api.instance.home} (projects under {cfg.projects_root})")


for group in (projects.project, projects.workspace, jobs.job, jobtypes.jobtypes, datasets.dataset, lanes.lane,
              caches.cache, master.master, workers.worker, maintenance.backup, maintenance.restore,
              maintenance.doctor, current.jobs, cleanup.cleanup, cleanup.db, usage.usage):
    cli.add_command(group)


def main(argv: list[str] | None = None) -> int:
    try:
        cli.main(args=argv, prog_name="cryohpc", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as err:
        err.show()
        return EXIT_ERROR
    except CryohpcError as err:
        click.echo(f"error: {shown_lines(str(err))}", err=True)
        return EXIT_ERROR
    except SystemExit as err:
        return err.code if isinstance(err.code, int) else 0
    return 0
