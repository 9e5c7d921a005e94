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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tokenize import TokenError
from typing import Literal

import lz4.block
import numpy as np

from ..atomic import atomic_path
from ..errors import DatasetError
from ..named_files import refuse_unless_regular
from .blocks import copy_fields, packed
from .hashing import LARGE, dedupe_rows, row_words

NUMPY_MAGIC = b"\x93NUMPY"
CSDAT_MAGIC = b"\x95CSDAT"
# Files larger than this are memory-mapped on load (numpy format only).
MMAP_THRESHOLD_BYTES = 64 * 1024 * 1024
# CryoSPARC compresses with acceleration 1000: speed over ratio.
_LZ4_ACCELERATION = 1000
_NEVER_COMPRESS = {"uid"}
_MAX_HEADER_SIZE = 1 << 30
# Bytes of a field, at each of three places, that lz4 tries before the whole field is.
_SAMPLE_BYTES = 16384

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
    refuse_unless_regular(path, "a .cs file", DatasetError)
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
    except OSError as err:  # gone or changed since it was checked
        raise DatasetError(f"{path}: cannot be read ({err.strerror or err})") from err
    if arr.dtype.names is None or "uid" not in arr.dtype.names:
        raise DatasetError(f"{path}: has no 'uid' field; every .cs dataset needs one")
    return arr


def _read_numpy(f, path: Path, mmap: bool) -> np.ndarray:
    try:
        if mmap:
            arr = np.load(path, mmap_mode="c", allow_pickle=False, max_header_size=_MAX_HEADER_SIZE)
        else:
            arr = np.load(f, allow_pickle=False, max_header_size=_MAX_HEADER_SIZE)
    except (ValueError, OSError, EOFError, SyntaxError, TokenError, TypeError, KeyError, MemoryError,
            OverflowError) as err:
        # numpy parses the header with ast: a damaged one raises syntax and tokenizer errors
        raise DatasetError(f"{path}: corrupt or truncated numpy-format .cs file "
                           f"({type(err).__name__}: {err})") from err
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
        descr = [(e[0], e[1], tuple(e[2]) if len(e) > 2 else ()) for e in header["dtype"]]
        compression = header.get("compression")
        compressed = set(header.get("compressed_fields") or [])
    except (ValueError, KeyError, TypeError, IndexError) as err:
        raise DatasetError(f"{path}: CSDAT header is not valid ({err})") from err
    if compression not in (None, "lz4"):
        raise DatasetError(f"{path}: unknown CSDAT compression {compression!r}")
    string_fields = {name for name, dt, _ in descr if dt in ("|O", "O")}

    # Locate every column first: the heap at the end gives the string widths, so the
    # final array (strings as fixed-width bytes) is allocated once and filled once.
    spans: dict[str, tuple[int, int]] = {}
    if length:
        for name, _, _ in descr:
            raw, pos = _take(buf, pos, 4, path, f"field {name!r}")
            (nbytes,) = struct.unpack("<I", raw)
            if pos + nbytes > len(buf):
                raise DatasetError(f"{path}: truncated CSDAT file (ends inside field {name!r})")
            spans[name] = (pos, nbytes)
            pos += nbytes
    starts, table = _heap_table(bytes(buf[pos:])) if string_fields else (None, None)
    try:
        dtype = np.dtype([
            (name, table.dtype) if name in string_fields else ((name, dt, shape) if shape else (name, dt))
            for name, dt, shape in descr
        ])
    except TypeError as err:
        raise DatasetError(f"{path}: CSDAT header has an invalid dtype ({err})") from err

    out = np.empty(length, dtype=dtype)

    def decode(name: str) -> None:
        start, nbytes = spans[name]
        is_str = name in string_fields
        col_dtype = np.dtype("<u8") if is_str else dtype[name].base
        count = length if is_str else length * int(np.prod(dtype[name].shape, dtype=np.int64))
        expected = count * col_dtype.itemsize
        raw = buf[start : start + nbytes]
        if name in compressed:
            try:
                raw = lz4.block.decompress(raw, uncompressed_size=expected)
            except lz4.block.LZ4BlockError as err:
                raise DatasetError(f"{path}: field {name!r} is corrupt ({err})") from err
        if len(raw) != expected:
            raise DatasetError(f"{path}: field {name!r} holds {len(raw)} bytes, expected {expected}")
        values = np.frombuffer(raw, dtype=col_dtype, count=count)
        if is_str:
            idx = np.minimum(np.searchsorted(starts, values), len(starts) - 1)
            if np.any(starts[idx] != values):
                raise DatasetError(f"{path}: field {name!r} points outside the string heap")
            out[name] = table[idx]
        else:
            out[name] = values.reshape((length, *dtype[name].shape))

    # each field fills its own bytes of the rows; numpy and lz4 release the GIL
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(decode, spans))
    return out


def _heap_table(heap: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Offsets at which the heap's strings start, sorted, and the strings; offset 0 is the
    empty string whatever the heap holds there."""
    starts, strings = [0], [b""]
    pos = 1 if heap[:1] == b"\x00" else 0
    while pos < len(heap):
        end = heap.find(b"\x00", pos)
        end = len(heap) if end < 0 else end
        if pos:
            starts.append(pos)
            strings.append(heap[pos:end])
        pos = end + 1
    width = max(len(x) for x in strings) + 1
    return np.asarray(starts, dtype=np.uint64), np.asarray(strings, dtype=f"S{width}")


def field_descr(dtype: np.dtype, name: str) -> tuple:
    """One field's (name, dtype[, shape]) entry, as numpy's structured dtypes take it."""
    sub = dtype[name]
    return (name, sub.base, sub.shape) if sub.shape else (name, sub)


def write_cs(path: str | os.PathLike, arr: np.ndarray, compression: Compression = None, csdat: bool = False) -> None:
    """Write a structured array as a ``.cs`` file, atomically (temp file + rename), so a
    reader never sees a partial file.

    ``csdat=False`` writes the numpy format every tool reads; ``csdat=True`` writes the
    CSDAT stream, lz4-compressed when ``compression="lz4"``.
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if csdat or compression:
            _write_csdat(f, arr, compression)
        else:
            np.save(f, _bytes_strings(packed(arr)), allow_pickle=False)


def _bytes_strings(arr: np.ndarray) -> np.ndarray:
    """Numpy-format files store strings as fixed-width UTF-8 bytes, never objects."""
    if not any(arr.dtype[n].kind in ("U", "O") for n in arr.dtype.names):
        return arr
    cols = {}
    for n in arr.dtype.names:
        if arr.dtype[n].kind in ("U", "O"):
            cols[n] = np.array([str(s).encode() for s in arr[n]], dtype=bytes)
    descr = [(n, cols[n].dtype) if n in cols else field_descr(arr.dtype, n) for n in arr.dtype.names]
    out = np.empty(len(arr), dtype=descr)
    for n in arr.dtype.names:
        out[n] = cols.get(n, arr[n])
    return out


def _group_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For uint64 keys: one representative index per distinct key, and each key's group."""
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.empty(len(keys), dtype=bool)
    starts[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    groups = np.empty(len(keys), dtype=np.intp)
    groups[order] = np.cumsum(starts) - 1
    return order[starts], groups


def string_codes(col: np.ndarray) -> tuple[list[bytes], np.ndarray]:
    """Distinct values of a bytes column and each row's index into them.

    numpy sorts fixed-width strings slowly, so rows are compared as raw bytes: runs of
    equal rows (rows of one stack usually sit together) collapse to their first row, and
    run heads are told apart by a 64-bit hash that is checked for collisions afterwards.
    """
    n = len(col)
    if n == 0:
        return [], np.zeros(0, dtype=np.intp)
    if n >= LARGE:  # one compiled pass over the rows and a hash table (hashing.py)
        codes, firsts = dedupe_rows(col)
        return col[firsts].tolist(), codes
    width = col.dtype.itemsize
    raw = col.view(f"V{width}")
    is_head = np.empty(n, dtype=bool)
    is_head[0] = True
    is_head[1:] = raw[1:] != raw[:-1]  # the operator handles void; the ufunc does not
    head_rows = np.flatnonzero(is_head)
    heads = col if len(head_rows) == n else col[head_rows]
    if len(heads) <= 4096:
        index: dict[bytes, int] = {}
        head_codes = np.fromiter((index.setdefault(v, len(index)) for v in heads.tolist()), np.intp, len(heads))
        values = list(index)
    else:
        words = list(row_words(heads).T)
        h = np.full(len(heads), 0x9E3779B97F4A7C15, dtype=np.uint64)
        for w in words:
            h ^= w
            h *= np.uint64(0x100000001B3)
            h ^= h >> np.uint64(29)
        rep, head_codes = _group_ids(h)
        same = rep[head_codes]
        if not all(np.array_equal(w[same], w) for w in words):  # a hash collision: slow path
            uniq, head_codes = np.unique(heads, return_inverse=True)
            return uniq.tolist(), head_codes.reshape(-1)[np.cumsum(is_head) - 1]
        values = heads[rep].tolist()
    return values, head_codes[np.cumsum(is_head) - 1]


def _columns(arr: np.ndarray) -> dict[str, np.ndarray]:
    """Every field but the strings as its own contiguous array."""
    cols = {n: np.empty(arr[n].shape, arr.dtype[n].base) for n in arr.dtype.names if not _is_string(arr.dtype[n])}
    copy_fields(arr, cols, cols)
    return cols


def _compress(data: np.ndarray) -> bytes:
    return lz4.block.compress(data, mode="fast", acceleration=_LZ4_ACCELERATION, store_size=False)


def _worth_compressing(data: np.ndarray) -> bool:
    """Whether lz4 shrinks a sample of the field (its start, middle and end) by a tenth.

    Most numeric particle fields (defocus, poses, shifts) are noise to lz4: storing them
    raw, which CSDAT allows field by field, saves a copy of the column and the time to
    compress it, and costs at most a tenth more bytes on disk.
    """
    if len(data) <= 3 * _SAMPLE_BYTES:
        return len(_compress(data)) < 0.9 * len(data)
    mid = len(data) // 2
    sample = np.concatenate([data[:_SAMPLE_BYTES], data[mid : mid + _SAMPLE_BYTES], data[-_SAMPLE_BYTES:]])
    return len(_compress(sample)) < 0.9 * len(sample)


def _string_offsets(arr: np.ndarray, names: list[str]) -> tuple[dict[str, np.ndarray], bytes]:
    """Each string field as u64 offsets into one heap of NUL-terminated values, each
    distinct value once across all fields: cryosparc-tools interns the heap as it reads
    it, and an offset to a repeated value reads back as the empty string there."""
    heap = bytearray(b"\x00")
    placed: dict[bytes, int] = {}
    offsets_of: dict[str, np.ndarray] = {}
    for name in names:
        col = arr[name]  # coded in place: string_codes reads strided rows
        values, inverse = string_codes(col if col.dtype.kind == "S" else np.char.encode(col.astype(str)))
        offsets = np.zeros(len(values), dtype="<u8")
        for i, b in enumerate(values):
            if b:
                if b not in placed:
                    placed[b] = len(heap)
                    heap += b + b"\x00"
                offsets[i] = placed[b]
        offsets_of[name] = offsets[inverse].view(np.uint8)
    return offsets_of, bytes(heap) if len(heap) > 1 else b""


def _write_csdat(f, arr: np.ndarray, compression: Compression) -> None:
    names = list(arr.dtype.names)
    string_names = [n for n in names if _is_string(arr.dtype[n])]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        # the string heap is built (numba, no GIL) while the numeric fields are split out
        strings = pool.submit(_string_offsets, arr, string_names)
        encoded: dict[str, bytes | np.ndarray] = {n: c.reshape(-1).view(np.uint8) for n, c in _columns(arr).items()}
        offsets_of, heap = strings.result()
        encoded.update(offsets_of)
        compressed = [n for n in names if compression and n not in _NEVER_COMPRESS
                      and (n in string_names or _worth_compressing(encoded[n]))]
        # lz4 releases the GIL: fields are compressed in parallel
        for name, data in zip(compressed, pool.map(lambda n: _compress(encoded[n]), compressed), strict=True):
            encoded[name] = data
    descr = []
    for name in names:
        sub = arr.dtype[name]
        if name in string_names:
            descr.append([name, "|O"])
        else:
            descr.append([name, sub.base.str, list(sub.shape)] if sub.shape else [name, sub.base.str])
    columns = [encoded[n] for n in names]
    header = json.dumps(
        {"length": len(arr), "dtype": descr, "compression": compression, "compressed_fields": compressed}
    ).encode()
    f.write(CSDAT_MAGIC)
    f.write(struct.pack("<I", len(header)))
    f.write(header)
    if len(arr):
        for data in columns:
            f.write(struct.pack("<I", data.nbytes if isinstance(data, np.ndarray) else len(data)))
            f.write(data)
    f.write(heap)
