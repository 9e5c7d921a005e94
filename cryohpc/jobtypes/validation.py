"""validate_fsc: FSC of half maps, or of a map against a reference."""

from __future__ import annotations

import numpy as np

from ..compute.fsc import fsc, plot_fsc, write_fsc_xml
from ..errors import InputFileError
from ..jobrun.context import RunContext
from .volumes import read_volume_result


def run_validate_fsc(ctx: RunContext) -> None:
    ds = ctx.load_input("volume")
    if ctx.jobfile.inputs.get("reference"):
        first, psize = read_volume_result(ctx, ds, "map", "input volume")
        second, ref_psize = read_volume_result(ctx, ctx.load_input("reference"), "map", "reference")
        label = "map vs reference"
    else:
        if "map_half_A/path" not in ds or "map_half_B/path" not in ds:
            raise InputFileError("the connected volume has no half maps (map_half_A, map_half_B); "
                                 "connect one that has, or connect a reference")
        first, psize = read_volume_result(ctx, ds, "map_half_A", "input volume")
        second, ref_psize = read_volume_result(ctx, ds, "map_half_B", "input volume")
        label = "half maps"
    if first.shape != second.shape:
        raise InputFileError(f"the maps differ in size: {first.shape} and {second.shape}")
    if abs(psize - ref_psize) > 0.01 * psize:
        raise InputFileError(f"the maps differ in pixel size: {psize:.4f} and {ref_psize:.4f} Å")
    curve = fsc(first, second, psize)
    res143, res05 = curve.resolution_A(0.143), curve.resolution_A(0.5)
    ctx.log(f"FSC ({label}): {res143:.2f} Å at 0.143, {res05:.2f} Å at 0.5")
    uid = ctx.jobfile.job_uid
    plot_fsc(ctx.job_dir / f"{uid}_fsc.svg", {label: curve}, f"{uid} FSC ({label})",
             threshold=0.5 if label == "map vs reference" else 0.143)
    write_fsc_xml(ctx.job_dir / f"{uid}_fsc.xml", curve, f"{uid} FSC ({label})")
    summary = {"fsc_0143_A": res143, "fsc_05_A": res05, "compared": label,
               "fsc_plot": ctx.relpath(ctx.job_dir / f"{uid}_fsc.svg"),
               "fsc_curve": [float(x) for x in np.round(curve.fsc, 4)]}
    ctx.save_output("volume", ds.select([]), summary=summary)
