"""Reading and writing ``.cs`` files in both of CryoSPARC's on-disk formats.

Format 1 is a plain ``np.save`` of a structured array (strings as fixed-width bytes);
every tool reads it, so it is the default. Format 2 (``CSDAT``) stores each column
separately, optionally lz4-compressed (``uid`` never), with strings in a shared heap of
NUL-terminated bytes addressed by u64 offsets (offset 0 is the empty string).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Literal

import lz4.block
import numpy as np

from ..errors import DatasetError

NUMPY_MAGIC = b"\x93NUMPY"
CSDAT_MAGIC = b"\x95CSDAT"
# Files larger than this are memory-mapped on load (numpy format only).
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
# CryoSPARC compresses with acceleration 1000: speed over ratio.
_LZ4_ACCELERATION = 1000
_NEVER_COMPRESS = {"uid"}
_MAX_HEADER_SIZE = 1 << 30

Compression = Literal["lz4"] | None


def _is_string(dt: np.dtype) -> bool:
    return dt.kind in ("S", "U", "O")


def read_cs(path: str | os.PathLike, mmap: bool | None = None) -> np.ndarray:
    """Load a ``.cs`` file of either format into a structured array.

    Args:
        path: the file.
        mmap: memory-map a numpy-format file (copy-on-write); ``None`` decides by size.

    Raises:
        DatasetError: the file is missing, truncated, or not a ``.cs`` file; the message
            names the file and what is wrong.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
            if magic == NUMPY_MAGIC:
                if mmap is None:
                    mmap = path.stat().st_size > MMAP_THRESHOLD_BYTES
                f.seek(0)
                arr = _read_numpy(f, path, mmap)
            elif magic == CSDAT_MAGIC:
                arr = _read_csdat(f, path)
            else:
                raise DatasetError(
                    f"{path}: not a .cs file (starts with {magic!r}; expected a numpy "
                    f"array {NUMPY_MAGIC!r} or a CSDAT stream {CSDAT_MAGIC!r})"
                )
    except FileNotFoundError as err:
        raise DatasetError(f"{path}: no such .cs file") from err
    except IsADirectoryError as err:
        raise DatasetError(f"{path}: is a directory, not a .cs file") from err
    if arr.dtype.names is None or "uid" not in arr.dtype.names:
        raise DatasetError(f"{path}: has no 'uid' field; every .cs dataset needs one")
    return arr


def _read_numpy(f, path: Path, mmap: bool) -> np.ndarray:
    try:
        if mmap:
            arr = np.load(path, mmap_mode="c", allow_pickle=False, max_header_size=_MAX_HEADER_SIZE)
        else:
            arr = np.load(f, allow_pickle=False, max_header_size=_MAX_HEADER_SIZE)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: corrupt or truncated numpy-format .cs file ({err})") from err
    if arr.dtype.names is None:
        raise DatasetError(f"{path}: holds a plain {arr.dtype} array, not a structured dataset")
    if arr.ndim != 1:
        raise DatasetError(f"{path}: dataset must be one-dimensional, found shape {arr.shape}")
    for name in arr.dtype.names:
        if arr.dtype[name].kind == "O":
            raise DatasetError(f"{path}: field {name!r} holds Python objects, which .cs files may not")
    return arr


def _take(buf: memoryview, pos: int, n: int, path: Path, what: str) -> tuple[bytes, int]:
    if pos + n > len(buf):
        raise DatasetError(f"{path}: truncated CSDAT file (ends inside {what})")
    return bytes(buf[pos : pos + n]), pos + n


def _read_csdat(f, path: Path) -> np.ndarray:
    buf = memoryview(f.read())  # after the 6-byte magic
    raw, pos = _take(buf, 0, 4, path, "the header length")
    (hlen,) = struct.unpack("<I", raw)
    raw, pos = _take(buf, pos, hlen, path, "the header")
    try:
        header = json.loads(raw)
        length = int(header["length"])
        descr = header["dtype"]
        compression = header.get("compression")
        compressed = set(header.get("compressed_fields") or [])
    except (ValueError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: CSDAT header is not valid ({err})") from err
    if compression not in (None, "lz4"):
        raise DatasetError(f"{path}: unknown CSDAT compression {compression!r}")

    fields: list[tuple] = []
    string_fields = []
    for entry in descr:
        name, dt = entry[0], entry[1]
        shape = tuple(entry[2]) if len(entry) > 2 else ()
        if dt in ("|O", "O"):
            string_fields.append(name)
            dt = "<u8"
        fields.append((name, dt, shape) if shape else (name, dt))
    try:
        dtype = np.dtype(fields)
    except TypeError as err:
        raise DatasetError(f"{path}: CSDAT header has an invalid dtype ({err})") from err
    out = np.empty(length, dtype=dtype)
    if length:
        for name in dtype.names:
            raw, pos = _take(buf, pos, 4, path, f"field {name!r}")
            (nbytes,) = struct.unpack("<I", raw)
            raw, pos = _take(buf, pos, nbytes, path, f"field {name!r}")
            col = out[name]
            expected = col.nbytes
            if name in compressed:
                try:
                    raw = lz4.block.decompress(raw, uncompressed_size=expected)
                except lz4.block.LZ4BlockError as err:
                    raise DatasetError(f"{path}: field {name!r} is corrupt ({err})") from err
            if len(raw) != expected:
                raise DatasetError(
                    f"{path}: field {name!r} holds {len(raw)} bytes, expected {expected}"
                )
            col[...] = np.frombuffer(raw, dtype=dtype[name].base).reshape(col.shape)
    heap = bytes(buf[pos:])
    if not string_fields:
        return out
    return _strings_from_heap(out, string_fields, heap, path)


def _strings_from_heap(arr: np.ndarray, string_fields: list[str], heap: bytes, path: Path) -> np.ndarray:
    decoded: dict[str, np.ndarray] = {}
    for name in string_fields:
        offsets = arr[name]
        uniq, inverse = np.unique(offsets, return_inverse=True)
        values = []
        for off in uniq.tolist():
            if off == 0:
                values.append(b"")
                continue
            end = heap.find(b"\x00", off)
            if off >= len(heap) or end < 0:
                raise DatasetError(f"{path}: field {name!r} points outside the string heap")
            values.append(heap[off:end])
        width = max((len(v) for v in values), default=0) + 1
        table = np.array(values, dtype=f"S{width}")
        decoded[name] = table[inverse.reshape(offsets.shape)]
    new_descr = [
        (n, decoded[n].dtype) if n in decoded else _field_descr(arr.dtype, n) for n in arr.dtype.names
    ]
    out = np.empty(len(arr), dtype=new_descr)
    for n in arr.dtype.names:
        out[n] = decoded[n] if n in decoded else arr[n]
    return out


def _field_descr(dtype: np.dtype, name: str) -> tuple:
    sub = dtype[name]
    return (name, sub.base, sub.shape) if sub.shape else (name, sub)


def write_cs(path: str | os.PathLike, arr: np.ndarray, compression: Compression = None, csdat: bool = False) -> None:
    """Write a structured array as a ``.cs`` file, atomically (temp file + rename).

    ``csdat=False`` writes the numpy format every tool reads; ``csdat=True`` writes the
    CSDAT stream, lz4-compressed when ``compression="lz4"``.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            if csdat or compression:
                _write_csdat(f, arr, compression)
            else:
                np.save(f, _bytes_strings(arr), allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _bytes_strings(arr: np.ndarray) -> np.ndarray:
    """Numpy-format files store strings as fixed-width UTF-8 bytes, never objects."""
    if not any(arr.dtype[n].kind in ("U", "O") for n in arr.dtype.names):
        return arr
    cols = {}
    for n in arr.dtype.names:
        if arr.dtype[n].kind in ("U", "O"):
            cols[n] = np.array([str(s).encode() for s in arr[n]], dtype=bytes)
    descr = [(n, cols[n].dtype) if n in cols else _field_descr(arr.dtype, n) for n in arr.dtype.names]
    out = np.empty(len(arr), dtype=descr)
    for n in arr.dtype.names:
        out[n] = cols.get(n, arr[n])
    return out


def _write_csdat(f, arr: np.ndarray, compression: Compression) -> None:
    heap = bytearray(b"\x00")
    columns: list[tuple[str, bytes]] = []
    descr = []
    for name in arr.dtype.names:
        sub = arr.dtype[name]
        if _is_string(sub):
            col = arr[name]
            uniq, inverse = np.unique(col, return_inverse=True)
            offsets = np.zeros(len(uniq), dtype="<u8")
            for i, s in enumerate(uniq.tolist()):
                b = s if isinstance(s, bytes) else str(s).encode()
                if b:
                    offsets[i] = len(heap)
                    heap += b + b"\x00"
            data = offsets[inverse.reshape(-1)].astype("<u8").tobytes()
            descr.append([name, "|O"])
        else:
            data = np.ascontiguousarray(arr[name]).tobytes()
            entry = [name, sub.base.str]
            if sub.shape:
                entry.append(list(sub.shape))
            descr.append(entry)
        columns.append((name, data))
    compressed = [n for n, _ in columns if compression and n not in _NEVER_COMPRESS]
    header = json.dumps(
        {"length": len(arr), "dtype": descr, "compression": compression, "compressed_fields": compressed}
    ).encode()
    f.write(CSDAT_MAGIC)
    f.write(struct.pack("<I", len(header)))
    f.write(header)
    if len(arr):
        for name, data in columns:
            if name in compressed:
                data = lz4.block.compress(
                    data, mode="fast", acceleration=_LZ4_ACCELERATION, store_size=False
                )
            f.write(struct.pack("<I", len(data)))
            f.write(data)
    f.write(bytes(heap) if len(heap) > 1 else b"")
