"""``cryohpc project ...`` and ``cryohpc workspace ...``."""

from __future__ import annotations

import click

from .kit import Ctx, _dump, _parse_assignments, _table, pass_ctx


@click.group()
def project() -> None:
    """Create and list projects."""


@project.command("create")
@click.option("--title", required=True)
@click.option("--dir", "project_dir", type=click.Path(file_okay=False), help="project directory (new or empty)")
@click.option("--description", default="")
@pass_ctx
def project_create(c: Ctx, title, project_dir, description) -> None:
    p = c.api.create_project(title, project_dir, description).model
    c.emit(_dump(p), f"{p.uid}  {p.project_dir}")


@project.command("set-defaults")
@click.argument("project_uid")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@pass_ctx
def project_set_defaults(c: Ctx, project_uid, assignments) -> None:
    """Project-wide param defaults, e.g. compute_use_ssd=false (an empty value removes one)."""
    values = {k: (v if v != "" else None) for k, v in _parse_assignments(assignments).items()}
    p = c.api.find_project(project_uid).set_default_params(**values)
    c.emit(_dump(p), f"{p.uid}: " + (", ".join(f"{k}={v}" for k, v in p.default_params.items()) or "no defaults"))


@project.command("set-vars")
@click.argument("project_uid")
@click.argument("assignments", nargs=-1, required=True, metavar="NAME=VALUE...")
@pass_ctx
def project_set_vars(c: Ctx, project_uid, assignments) -> None:
    """Project-level values of cluster lanes' custom variables (an empty value removes one)."""
    values = {k: (v if v != "" else None) for k, v in _parse_assignments(assignments).items()}
    p = c.api.find_project(project_uid).set_cluster_vars(**values)
    c.emit(_dump(p), f"{p.uid}: " + ", ".join(f"{k}={v}" for k, v in p.cluster_custom_vars.items()))


@project.command("list")
@pass_ctx
def project_list(c: Ctx) -> None:
    ps = c.api.projects()
    c.emit([_dump(p) for p in ps], _table([_dump(p) for p in ps], ["uid", "title", "project_dir"]))


@click.group()
def workspace() -> None:
    """Create and list workspaces of a project."""


@workspace.command("create")
@click.argument("project_uid")
@click.option("--title", required=True)
@pass_ctx
def workspace_create(c: Ctx, project_uid, title) -> None:
    w = c.api.find_project(project_uid).create_workspace(title)
    c.emit(_dump(w), f"{w.project_uid} {w.uid}")


@workspace.command("list")
@click.argument("project_uid")
@pass_ctx
def workspace_list(c: Ctx, project_uid) -> None:
    ws = c.api.find_project(project_uid).workspaces()
    c.emit([_dump(w) for w in ws], _table([_dump(w) for w in ws], ["uid", "title"]))


# -- jobs -------------------------------------------------------------------------------
