"""``cryohpc dataset ...``: inspect .cs files."""

from __future__ import annotations

import click

from .kit import Ctx, _short, _table, pass_ctx


@click.group()
def dataset() -> None:
    """Inspect .cs files."""


@dataset.command("show")
@click.argument("path", type=click.Path())
@click.option("--rows", default=5, show_default=True, type=click.IntRange(min=0), help="rows to print")
@pass_ctx
def dataset_show(c: Ctx, path, rows) -> None:
    """Fields, dtypes and the first rows of a .cs file (either format)."""
    from ..api import Api

    ds = Api.load_dataset(path)
    descr = [{"field": d[0], "dtype": str(d[1]), "shape": list(d[2]) if len(d) > 2 else []} for d in ds.descr()]
    head = ds.array[:rows]
    # a file's bytes need not be UTF-8: shown escaped, not refused (this command is how one looks)
    preview = [{f: (v.decode(errors="backslashreplace") if isinstance(v, bytes)
                    else v.tolist() if hasattr(v, "tolist") else v)
                for f, v in zip(ds.fields(), row, strict=True)} for row in head.tolist()]
    if c.as_json:
        c.emit({"path": path, "items": len(ds), "fields": descr, "rows": preview})
        return
    click.echo(f"{path}: {len(ds)} items, {len(descr)} fields")
    rows_out = []
    for d in descr:
        row = {"field": d["field"], "dtype": d["dtype"], "shape": "x".join(map(str, d["shape"]))}
        for i, item in enumerate(preview):
            row[f"[{i}]"] = _short(item[d["field"]])
        rows_out.append(row)
    click.echo(_table(rows_out, ["field", "dtype", "shape", *(f"[{i}]" for i in range(len(preview)))]))
