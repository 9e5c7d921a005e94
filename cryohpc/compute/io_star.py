"""RELION STAR files (3.0 single-table and 3.1 with optics groups) through ``starfile``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputFileError
from ..named_files import refuse_unless_regular


@dataclass
class ParticleTable:
    """Particle rows with optics values already merged in, as numpy columns."""

    path: Path
    columns: dict[str, np.ndarray]
    block: str  # name of the particle block, for messages

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def has(self, *names: str) -> bool:
        return all(n in self.columns for n in names)

    def require(self, *names: str, purpose: str) -> list[np.ndarray]:
        missing = [n for n in names if n not in self.columns]
        if missing:
            raise InputFileError(
                f"{self.path}: data_{self.block} lacks column(s) {', '.join(missing)} (needed for {purpose})"
            )
        return [self.columns[n] for n in names]

    def numbers(self, *names: str, purpose: str) -> list[np.ndarray]:
        """Required columns as finite float64 numbers.

        Raises:
            InputFileError: a column missing, or a value that is not a finite number
                (naming the file, the column and the row).
        """
        return [finite_numbers(self.path, self.block, n, c) for n, c in zip(names, self.require(*names, purpose=purpose),
                                                                             strict=True)]

    def number(self, name: str) -> np.ndarray:
        """One required column as finite float64 numbers (see ``numbers``)."""
        return self.numbers(name, purpose=name)[0]


def finite_numbers(path: Path, block: str, name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as float64, or an error naming the first row that is not a finite number."""
    try:
        out = np.asarray(values, dtype=np.float64)
        bad = np.flatnonzero(~np.isfinite(out))
    except (TypeError, ValueError):
        out, bad = None, []
        for i, v in enumerate(values):
            try:
                if not np.isfinite(float(v)):
                    bad = [i]
                    break
            except (TypeError, ValueError):
                bad = [i]
                break
    if len(bad):
        row = int(bad[0])
        raise InputFileError(f"{path}: data_{block} column {name} row {row + 1}: {values[row]!r} is not a finite number")
    return out


def read_particle_star(path: str | os.PathLike) -> ParticleTable:
    """Read particles; in 3.1 files each row takes its optics group's values.

    Raises:
        InputFileError: unreadable file, no particle table, or an optics group missing.
    """
    path = Path(path)
    refuse_unless_regular(path, "a STAR file")
    import starfile  # here, not at the top: pandas and pyarrow cost every worker 65 MB

    try:
        blocks = starfile.read(path, always_dict=True, parse_as_string=["rlnImageName", "rlnMicrographName"])
    except Exception as err:  # starfile raises many kinds on malformed input
        raise InputFileError(f"{path}: not a readable STAR file ({type(err).__name__}: {err})") from err
    tables = {k: v for k, v in blocks.items() if hasattr(v, "columns")}
    if "particles" in tables:
        name = "particles"
    elif len(tables) == 1:
        name = next(iter(tables))
    else:
        raise InputFileError(f"{path}: no data_particles table (found: {', '.join(tables) or 'none'})")
    df = tables[name]
    cols = {str(c): df[c].to_numpy() for c in df.columns}
    optics = tables.get("optics")
    if optics is not None and "rlnOpticsGroup" in cols:
        if "rlnOpticsGroup" not in optics.columns:
            raise InputFileError(f"{path}: data_optics lacks column rlnOpticsGroup")
        numbered = finite_numbers(path, "optics", "rlnOpticsGroup", optics["rlnOpticsGroup"].to_numpy()).astype(int)
        groups = {int(g): row for g, row in zip(numbered, optics.to_dict("records"), strict=True)}
        ids = finite_numbers(path, name, "rlnOpticsGroup", cols["rlnOpticsGroup"]).astype(int)
        unknown = sorted(set(ids.tolist()) - set(groups))
        if unknown:
            raise InputFileError(f"{path}: particles use optics group(s) {unknown} not in data_optics")
        for key in optics.columns:
            if key in cols or key == "rlnOpticsGroup":
                continue
            lut = {g: row[key] for g, row in groups.items()}
            cols[str(key)] = np.array([lut[i] for i in ids])
    return ParticleTable(path=path, columns=cols, block=name or "(unnamed)")


def write_star(path: str | os.PathLike, blocks: dict[str, dict[str, np.ndarray]]) -> None:
    """Write tables ``{block: {column: values}}`` (used to hand data to RELION)."""
    import pandas as pd
    import starfile

    starfile.write({k: pd.DataFrame(v) for k, v in blocks.items()}, path, overwrite=True)
