"""Run functions of particle utility job types (worker side)."""

from __future__ import annotations

from pathlib import Path

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


def parse_classes(text: str) -> list[int]:
    """``"1,3,5-7"`` as class numbers counted from 1 (as RELION names its class files).

    Raises:
        InputFileError: naming the part that is not a number or a range.
    """
    out: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise InputFileError(f"classes: {part!r} is not a class number or a range like 5-7") from None
        if first < 1 or last < first:
            raise InputFileError(f"classes: {part!r}: classes count from 1, ranges go upwards")
        out += range(first, last + 1)
    if not out:
        raise InputFileError("classes: no class given (e.g. 1,3,5-7)")
    return sorted(set(out))


def _class_field(ctx: RunContext, ds) -> str:
    """The class the user means: as asked, else the one the connected job itself wrote
    (a 2D classification of particles that carry an older 3D class passes that through)."""
    asked = ctx.params.get("class_field") or "auto"
    present = [f for f in ("alignments2D/class", "alignments3D/class") if f in ds]
    if asked != "auto":
        if f"{asked}/class" not in ds:
            raise InputFileError(f"class_field {asked}: the particles have no {asked}/class "
                                 f"(they have: {', '.join(present) or 'no class'})")
        return f"{asked}/class"
    if not present:
        raise InputFileError("the particles carry no class (alignments3D/class or alignments2D/class): connect "
                             "the particles of a classification job")
    own = [f for f in present if any(_written_by(conn, f.split("/")[0]) for conn in ctx.jobfile.inputs["particles"])]
    return (own or present)[0]


def _written_by(conn, result: str) -> bool:
    """The connected job wrote ``result`` itself (it is not in its passthrough file,
    ``<job>_passthrough_<group>.cs``, as ``RunContext.save_output`` names it)."""
    path = {**conn.slots, **conn.passthrough}.get(result)
    return path is not None and not Path(path).name.startswith(f"{conn.job_uid}_passthrough_")


def run_select_classes(ctx: RunContext) -> None:
    ds = ctx.load_input("particles", passthrough=True)
    field = _class_field(ctx, ds)
    wanted = parse_classes(ctx.params["classes"])
    have = np.unique(ds[field]).astype(int) + 1
    absent = sorted(set(wanted) - set(have.tolist()))
    if absent:
        ctx.log(f"warning: no particle is in class(es) {', '.join(map(str, absent))} (classes present: "
                f"{', '.join(map(str, have.tolist()))})", level="warning")
    keep = ds.mask(np.isin(ds[field].astype(int) + 1, wanted))
    if len(keep) == 0:
        raise InputFileError(f"no particle is in class(es) {ctx.params['classes']}; present: "
                             f"{', '.join(map(str, have.tolist()))}")
    ctx.log(f"keeping {len(keep)} of {len(ds)} particles, in class(es) {', '.join(map(str, wanted))} ({field})")
    ctx.save_output("particles", keep.select([]), summary={"classes": wanted, "kept": len(keep), "of": len(ds)})
