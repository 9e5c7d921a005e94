"""Run functions of particle utility job types (worker side)."""

from __future__ import annotations

import numpy as np

from ..errors import InputFileError
from ..jobrun.context import RunContext


def run_subset_particles(ctx: RunContext) -> None:
    ds = ctx.load_input("particles", passthrough=True)  # filters may use any field of the items
    ctx.log(f"{len(ds)} particles connected")
    field, value = ctx.params.get("where_field"), ctx.params.get("where_value")
    if field:
        if field not in ds:
            raise InputFileError(f"where_field {field!r} is not a field of the input (fields: {', '.join(ds.fields())})")
        col = ds[field]
        typed = value if col.dtype.kind == "S" else np.asarray(value).astype(col.dtype)
        ds = ds.query({field: typed})
        ctx.log(f"{len(ds)} particles with {field} = {value}")
    n = ctx.params.get("max_items")
    if n is not None and n < len(ds):
        seed = ctx.params.get("random_seed")
        if seed is None:
            ds = ds.take(np.arange(n))
        else:
            ds = ds.take(np.sort(np.random.default_rng(seed).choice(len(ds), size=n, replace=False)))
    ctx.log(f"keeping {len(ds)} particles")
    ctx.save_output("particles", ds.select_prefixes(["blob"]))


def run_cache_particles(ctx: RunContext) -> None:
    ds = ctx.load_input("particles")
    stacks = sorted({ctx.project_path(p) for p in set(ds.strings("blob/path"))})
    if not ctx.cache_enabled:
        raise InputFileError(f"lane of this job has no SSD cache configured (cache_path); {len(stacks)} stack(s) "
                             "left where they are")
    with ctx.cached(stacks):
        pass
    ctx.save_output("particles", ds.select([]))
