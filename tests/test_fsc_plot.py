"""The FSC plot cryohpc writes by hand as SVG: any curves and any title give a document an
XML parser reads, with every curve's every shell inside the plot and the legend's figures."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.compute.fsc import FscCurve, plot_fsc

SVG = "{http://www.w3.org/2000/svg}"


@st.composite
def curves(draw) -> dict[str, FscCurve]:
    made = {}
    for i in range(draw(st.integers(1, 4))):
        box = 2 * draw(st.integers(2, 150))
        psize = draw(st.floats(0.3, 12))
        values = draw(st.lists(st.floats(-3, 3) | st.just(np.nan), min_size=box // 2 + 1,
                               max_size=box // 2 + 1))
        made[f"curve {i} <&>"] = FscCurve(np.arange(box // 2 + 1) / (box * psize), np.array(values), box, psize)
    return made


@settings(max_examples=60, deadline=None)
@given(made=curves(), title=st.text(max_size=60))
def test_any_curves_and_title_give_a_plot_an_xml_parser_reads(tmp_path_factory, made, title):
    path = tmp_path_factory.mktemp("plot") / "fsc.svg"
    plot_fsc(path, made, title)
    root = ET.parse(path).getroot()
    texts = [t.text or "" for t in root.iter(f"{SVG}text")]
    kept = re.sub("[\x00-\x1f\ud800-\udfff\ufffe\uffff]", "", title)
    assert texts[0] == kept
    frame = next(r for r in root.iter(f"{SVG}rect") if r.get("fill") == "none")
    x0, y0 = float(frame.get("x")), float(frame.get("y"))
    x1, y1 = x0 + float(frame.get("width")), y0 + float(frame.get("height"))
    lines = list(root.iter(f"{SVG}polyline"))
    assert len(lines) == len(made)
    for line, (label, c) in zip(lines, made.items(), strict=True):
        pts = np.array([p.split(",") for p in line.get("points").split()], float)
        assert len(pts) == len(c.fsc)
        assert (pts[:, 0] >= x0 - 0.05).all() and (pts[:, 0] <= x1 + 0.05).all()
        assert (pts[:, 1] >= y0 - 0.05).all() and (pts[:, 1] <= y1 + 0.05).all()
        assert (np.diff(pts[:, 0]) >= 0).all()  # shells left to right
        assert f"{label} ({c.resolution_A(0.143):.2f} Å at 0.143)" in texts
