"""MRC stacks and volumes through ``mrcfile``, with errors that name the file."""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ..atomic import atomic_path
from ..errors import InputFileError
from ..named_files import refuse_unless_regular


@contextlib.contextmanager
def _strict():
    """mrcfile warns (and reads on) when a file is longer than its header says, which is
    a damaged file: an error here, not a line on stderr."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


@dataclass(frozen=True)
class MrcInfo:
    path: Path
    shape: tuple[int, int, int]  # (z or n, y, x)
    dtype: np.dtype
    psize_A: float  # 0 when the header does not say
    is_stack: bool


def read_info(path: str | os.PathLike) -> MrcInfo:
    """Header facts of an MRC file, checking it is complete.

    Raises:
        InputFileError: missing, not an MRC file, or shorter than its header says.
    """
    path = Path(path)
    refuse_unless_regular(path, "an MRC file")
    try:
        with _strict(), mrcfile.mmap(path, mode="r", permissive=False) as m:
            shape = m.data.shape
            dtype = m.data.dtype
            vs = float(m.voxel_size.x)
            is_stack = m.is_image_stack() or path.suffix == ".mrcs"
    except (ValueError, OSError, EOFError, OverflowError, MemoryError, RuntimeWarning) as err:
        raise InputFileError(f"{path}: corrupt or truncated MRC file ({err})") from err
    if len(shape) == 2:
        shape = (1, *shape)
    return MrcInfo(path=path, shape=tuple(int(s) for s in shape), dtype=dtype, psize_A=vs, is_stack=is_stack)


def read_images(path: str | os.PathLike, indices: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Images of a stack (all, or those at ``indices``) as float32, shape (n, y, x); into
    ``out`` when given (e.g. pinned memory a GPU copies from), with a single copy from the
    file when the indices are one ascending run."""
    path = Path(path)
    refuse_unless_regular(path, "an MRC file")
    try:
        with _strict(), mrcfile.mmap(path, mode="r", permissive=False) as m:
            data = m.data if m.data.ndim == 3 else m.data[None]
            if indices is None:
                picked = data[:]
            else:
                idx = np.asarray(indices, dtype=np.int64)
                if len(idx) and (idx.max() >= len(data) or idx.min() < -len(data)):
                    bad = idx[(idx >= len(data)) | (idx < -len(data))][0]
                    raise IndexError(f"index {bad} is out of bounds for a stack of {len(data)} images")
                run = len(idx) and idx[0] >= 0 and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1)
                picked = data[idx[0]:idx[-1] + 1] if run else data[idx]
            if out is None:  # a copy: slices of the file's mapping must not outlive it
                return np.array(picked, dtype=np.float32, copy=True)
            out[...] = picked
            return out
    except (ValueError, OSError, EOFError, OverflowError, MemoryError, RuntimeWarning) as err:
        raise InputFileError(f"{path}: cannot read images ({err})") from err
    except IndexError as err:
        raise InputFileError(f"{path}: image index out of range ({err})") from err


def read_volume(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    path = Path(path)
    refuse_unless_regular(path, "an MRC file")
    try:
        with _strict(), mrcfile.open(path, mode="r", permissive=False) as m:
            return np.asarray(m.data, dtype=np.float32), float(m.voxel_size.x)
    except (ValueError, OSError, EOFError, OverflowError, MemoryError, RuntimeWarning) as err:
        raise InputFileError(f"{path}: corrupt or truncated MRC file ({err})") from err


def _write(path: Path, data: np.ndarray, psize_A: float, stack: bool, dtype=np.float32) -> None:
    with atomic_path(path) as tmp, mrcfile.new(tmp, overwrite=True) as m:
        m.set_data(np.ascontiguousarray(data, dtype=dtype))
        if stack:
            m.set_image_stack()
        m.voxel_size = psize_A


def write_stack(path: str | os.PathLike, images: np.ndarray, psize_A: float, dtype=np.float32) -> None:
    """Write (n, y, x) images as an ``.mrcs`` stack, atomically (float32, or float16: MRC
    mode 12, half the space)."""
    _write(Path(path), images, psize_A, stack=True, dtype=dtype)


def write_volume(path: str | os.PathLike, volume: np.ndarray, psize_A: float) -> None:
    _write(Path(path), volume, psize_A, stack=False)
