"""Fourier shell correlation between two maps, the resolutions where it crosses 0.143 and
0.5, and EMDB's FSC XML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np

from .fourier import radial_index


@dataclass
class FscCurve:
    freq_invA: np.ndarray  # shell spatial frequency, 1/Å
    fsc: np.ndarray
    box: int
    psize_A: float

    def up_to(self, fraction: float) -> np.ndarray:
        """FSC of the shells from the first up to ``fraction`` of Nyquist (the shells a
        known-answer threshold is asked of)."""
        return self.fsc[1:int(np.floor(fraction * (self.box // 2))) + 1]

    def resolution_A(self, threshold: float) -> float:
        """Resolution at the first crossing below ``threshold`` (linear between shells);
        Nyquist when the curve never drops below it."""
        below = np.flatnonzero(self.fsc[1:] < threshold)
        if not len(below):
            return 2 * self.psize_A
        i = below[0] + 1
        f0, f1 = self.fsc[i - 1], self.fsc[i]
        x0, x1 = self.freq_invA[i - 1], self.freq_invA[i]
        x = x0 + (f0 - threshold) * (x1 - x0) / (f0 - f1) if f0 != f1 else x1
        return float(1.0 / x) if x > 0 else float("inf")


def fsc(map1: np.ndarray, map2: np.ndarray, psize_A: float) -> FscCurve:
    """FSC per shell: Re Σ F1·F2* / sqrt(Σ|F1|² Σ|F2|²), shells 0 .. box/2."""
    n = map1.shape[0]
    f1 = np.fft.fftshift(np.fft.fftn(np.asarray(map1, np.float64)))
    f2 = np.fft.fftshift(np.fft.fftn(np.asarray(map2, np.float64)))
    r = radial_index(n, 3).reshape(-1)
    keep = r <= n // 2
    r = r[keep]
    a, b = f1.reshape(-1)[keep], f2.reshape(-1)[keep]
    num = np.bincount(r, (a * np.conj(b)).real, minlength=n // 2 + 1)
    d1 = np.bincount(r, np.abs(a) ** 2, minlength=n // 2 + 1)
    d2 = np.bincount(r, np.abs(b) ** 2, minlength=n // 2 + 1)
    curve = num / np.sqrt(np.maximum(d1 * d2, 1e-30))
    freq = np.arange(n // 2 + 1) / (n * psize_A)
    return FscCurve(freq_invA=freq, fsc=curve, box=n, psize_A=psize_A)


def write_fsc_xml(path: Path, curve: FscCurve, title: str) -> None:
    """EMDB's FSC curve format (``<fsc><coordinate><x/><y/></coordinate>...``)."""
    lines = [f'<fsc title="{escape(title)}" xaxis="Resolution (A-1)" yaxis="Correlation Coefficient">']
    for x, y in zip(curve.freq_invA, curve.fsc, strict=True):
        lines.append(f"  <coordinate><x>{x:.6f}</x><y>{y:.6f}</y></coordinate>")
    lines.append("</fsc>")
    Path(path).write_text("\n".join(lines) + "\n")


def plot_fsc(path: Path, curves: dict[str, FscCurve], title: str, threshold: float = 0.143) -> None:
    """An FSC plot (PNG) with the 0.143 and 0.5 lines; the legend gives each curve's
    resolution at ``threshold`` (0.143 between half maps, 0.5 against a reference)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, c in curves.items():
        ax.plot(c.freq_invA, c.fsc, label=f"{label} ({c.resolution_A(threshold):.2f} Å at {threshold:g})")
    for t in (0.143, 0.5):
        ax.axhline(t, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("spatial frequency (1/Å)")
    ax.set_ylabel("FSC")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
