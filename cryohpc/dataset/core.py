"""``Dataset``: a table of items keyed by ``uid``, the unit of data exchanged between jobs.

Columns are named ``prefix/name`` (``blob/path``, ``ctf/df1_A``); the prefix is the
*result* (slot) a column belongs to. Strings are kept as fixed-width UTF-8 bytes, the
numpy-format representation, so a memory-mapped file needs no conversion; use
:meth:`Dataset.strings` for Python ``str`` values.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import DatasetError
from .blocks import copy_fields, packed, packed_copy, packed_dtype
from .csfile import Compression, field_descr, read_cs, write_cs
from .hashing import LARGE, match_keys

FieldSpec = tuple  # (name, dtype) or (name, dtype, shape)


def _as_bytes_column(values: Any) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind in ("U", "O"):
        arr = np.array([str(v).encode() for v in arr.reshape(-1)], dtype=bytes).reshape(arr.shape)
    return arr


def text_of(raw: bytes, field: str, row: int | None = None) -> str:
    """One value of a string field as ``str``. ``.cs`` strings are UTF-8 (cryosparc-tools
    writes and reads them so); bytes that are not come from a damaged or foreign file.

    Raises:
        DatasetError: naming the field, the row (0-based ``row``, shown from 1) and the value.
    """
    try:
        return raw.decode()
    except UnicodeDecodeError:
        where = f"field {field!r}" + ("" if row is None else f" row {row + 1}")
        raise DatasetError(f"{where} holds {raw!r}, which is not UTF-8 text") from None


def new_uids(n: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """Random unique 64-bit uids, as CryoSPARC makes them."""
    rng = rng or np.random.default_rng()
    uids = rng.integers(1, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    while len(np.unique(uids)) != n:  # astronomically rare, but cheap to rule out
        uids = rng.integers(1, np.iinfo(np.uint64).max, size=n, dtype=np.uint64, endpoint=True)
    return uids


def _match_uids(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices (ia, ib) with a[ia] == b[ib], in a's order; uids are unique within each."""
    if len(a) + len(b) >= LARGE:
        partner = match_keys(a, b)
        ia = np.flatnonzero(partner >= 0)
        return ia, partner[ia]
    with ThreadPoolExecutor(max_workers=2) as pool:  # argsort releases the GIL
        sa_f, sb_f = pool.submit(np.argsort, a), pool.submit(np.argsort, b)
        sa, sb = sa_f.result(), sb_f.result()
    a_sorted, b_sorted = a[sa], b[sb]
    pos = np.searchsorted(b_sorted, a_sorted)  # sorted queries: cache-friendly
    pos = np.minimum(pos, len(b) - 1) if len(b) else pos
    hit = b_sorted[pos] == a_sorted if len(b) else np.zeros(len(a), dtype=bool)
    partner = np.full(len(a), -1, dtype=np.intp)
    partner[sa[hit]] = sb[pos[hit]]
    ia = np.flatnonzero(partner >= 0)
    return ia, partner[ia]


def _rows_as_bytes(arr: np.ndarray) -> np.ndarray:
    return arr.view(np.uint8).reshape(len(arr), arr.dtype.itemsize)


class Dataset:
    """A structured array with CryoSPARC ``.cs`` semantics (join on ``uid``, append, split).

    Selecting, dropping or renaming fields copies nothing: the new dataset is a view of
    these rows, and both sides are copy-on-write. While rows are shared, ``array`` and
    ``ds[field]`` hand out read-only arrays, and ``ds[field] = values`` first gives the
    dataset written to a private copy, so neither side ever sees the other's writes.
    Arrays taken out *before* the sharing began are plain numpy views and still write
    into the shared rows; ``copy()`` gives a dataset independent of them too, and frees
    the wider rows a narrow selection would otherwise keep alive.
    """

    # _sharers: the views made from one set of rows, by id (weakly held; one mapping
    # shared by the rows' owner and its views, a view being in it itself)
    __slots__ = ("_data", "_sharers", "__weakref__")

    def __init__(self, data: np.ndarray):
        if data.dtype.names is None or "uid" not in data.dtype.names:
            raise DatasetError("a dataset needs a structured array with a 'uid' field")
        self._data = data
        self._sharers: weakref.WeakValueDictionary[int, Dataset] | None = None

    def __reduce__(self):
        return (Dataset, (packed(self._data),))

    def __copy__(self) -> Dataset:
        return self.copy()

    # -- copy on write ---------------------------------------------------------------
    def _shares_rows(self) -> bool:
        return bool(self._sharers)  # a view, or an owner with views alive

    def _lend(self, rows: np.ndarray) -> Dataset:
        """A dataset over ``rows``, a view of this one's rows: read-only until it writes."""
        rows.flags.writeable = False
        view = Dataset(rows)
        if self._sharers is None:
            self._sharers = weakref.WeakValueDictionary()
        view._sharers = self._sharers
        self._sharers[id(view)] = view
        return view

    def _own_rows(self) -> None:
        """Before a write: rows shared with another dataset are copied, so the write
        stays this dataset's alone."""
        if not self._shares_rows():
            return
        self._data = packed_copy(self._data)
        self._leave_sharers()

    def _leave_sharers(self) -> None:
        if self._sharers is not None:
            self._sharers.pop(id(self), None)  # a view leaves; an owner is not in it
        self._sharers = None

    def _rows(self, index: Any) -> np.ndarray:
        """The rows ``index`` picks, copied, gap-free (a view's rows carry the gaps of the
        wider rows it was made from)."""
        return packed(self._data[index])

    # -- construction and files -------------------------------------------------
    @classmethod
    def allocate(cls, size: int, fields: Sequence[FieldSpec] = (), uids: np.ndarray | None = None) -> Dataset:
        """A zero-filled dataset of ``size`` items with fresh random uids (or the ones given)."""
        descr: list[FieldSpec] = [("uid", "<u8")]
        descr += [f for f in fields if f[0] != "uid"]
        data = np.zeros(size, dtype=descr)
        data["uid"] = new_uids(size) if uids is None else uids
        return cls(data)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any]) -> Dataset:
        """Build from ``{field: values}``; uids are generated when ``uid`` is absent."""
        cols = {k: _as_bytes_column(v) for k, v in columns.items()}
        if not cols:
            raise DatasetError("from_columns needs at least one column")
        n = len(next(iter(cols.values())))
        for k, v in cols.items():
            if len(v) != n:
                raise DatasetError(f"column {k!r} has {len(v)} rows, expected {n}")
        descr: list[FieldSpec] = [("uid", "<u8")]
        for k, v in cols.items():
            if k != "uid":
                descr.append((k, v.dtype, v.shape[1:]) if v.ndim > 1 else (k, v.dtype))
        data = np.empty(n, dtype=descr)
        data["uid"] = cols["uid"] if "uid" in cols else new_uids(n)
        for k, v in cols.items():
            if k != "uid":
                data[k] = v
        return cls(data)

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool | None = None) -> Dataset:
        """Load a ``.cs`` file in either format (see :func:`read_cs`).

        Raises:
            DatasetError: missing, truncated or malformed file (named in the message).
        """
        return cls(read_cs(path, mmap=mmap))

    def save(self, path: str | os.PathLike, compression: Compression = None, csdat: bool = False) -> None:
        """Write as numpy format (default) or CSDAT (``csdat=True`` or ``compression="lz4"``)."""
        write_cs(path, self._data, compression=compression, csdat=csdat)

    # -- basic access ---------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """The underlying structured array, gap-free as a ``.cs`` file holds it (what
        cryosparc-tools and ``np.save`` accept); read-only while its rows are shared.

        Not copied, except that a selection over wider rows copies its fields out here,
        once, and then owns them.
        """
        if packed_dtype(self._data.dtype) != self._data.dtype:
            self._data = packed(self._data)
            self._leave_sharers()
        if self._shares_rows() and self._data.flags.writeable:
            view = self._data.view()
            view.flags.writeable = False
            return view
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, field: str) -> bool:
        return field in self._data.dtype.names

    def __getitem__(self, field: str) -> np.ndarray:
        try:
            col = self._data[field]
        except (ValueError, KeyError) as err:
            raise DatasetError(f"dataset has no field {field!r} (fields: {', '.join(self.fields())})") from err
        if self._shares_rows():
            col.flags.writeable = False
        return col

    def __setitem__(self, field: str, values: Any) -> None:
        if field not in self:
            raise DatasetError(f"dataset has no field {field!r}; use add_fields first")
        if field == "uid":
            raise DatasetError("uids are the join key and cannot be reassigned in place")
        values = _as_bytes_column(values)
        self._own_rows()
        self._data[field] = values

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        return self.fields() == other.fields() and all(
            np.array_equal(self._data[f], other._data[f]) for f in self.fields()
        )

    def __repr__(self) -> str:
        return f"Dataset({len(self)} items, fields={self.fields()})"

    def fields(self) -> list[str]:
        return list(self._data.dtype.names)

    def prefixes(self) -> list[str]:
        """Result names present (``blob``, ``ctf``...), in field order."""
        seen: dict[str, None] = {}
        for f in self.fields():
            if "/" in f:
                seen.setdefault(f.split("/", 1)[0], None)
        return list(seen)

    def descr(self) -> list[FieldSpec]:
        return [field_descr(self._data.dtype, n) for n in self.fields()]

    def strings(self, field: str) -> list[str]:
        """A string column decoded to Python ``str``.

        Raises:
            DatasetError: not a string field, or a value is not UTF-8 (row and value named).
        """
        col = self[field]
        if col.dtype.kind != "S":
            raise DatasetError(f"field {field!r} is {col.dtype}, not a string field")
        raw = col.tolist()
        try:
            return [b.decode() for b in raw]  # the common case, without a call per row
        except UnicodeDecodeError:
            return [text_of(b, field, i) for i, b in enumerate(raw)]  # raises at the first bad row

    def copy(self) -> Dataset:
        """An independent dataset with its own gap-free rows."""
        return Dataset(packed_copy(self._data))

    # -- fields ---------------------------------------------------------------------
    def add_fields(self, fields: Sequence[FieldSpec], values: Mapping[str, Any] | None = None) -> Dataset:
        """A new dataset with extra (zero-filled unless given) fields; existing ones are kept."""
        new = [f for f in fields if f[0] not in self]
        out = np.zeros(len(self), dtype=self.descr() + list(new))
        copy_fields(self._data, out, self.fields())
        ds = Dataset(out)
        for k, v in (values or {}).items():
            ds[k] = v
        return ds

    def drop_fields(self, names: Iterable[str] | Callable[[str], bool]) -> Dataset:
        """A new dataset without the named fields (or those the predicate picks); ``uid`` stays."""
        if isinstance(names, str):
            names = [names]
        drop = set(filter(names, self.fields())) if callable(names) else set(names)
        unknown = drop - set(self.fields())
        if unknown:
            raise DatasetError(f"cannot drop unknown fields: {', '.join(sorted(unknown))}")
        drop.discard("uid")
        return self.select([f for f in self.fields() if f not in drop])

    def select(self, names: Sequence[str]) -> Dataset:
        """A new dataset holding ``uid`` and the named fields, in that order (a name given
        twice is kept once). It shares these rows, copy-on-write (see the class)."""
        if isinstance(names, (str, bytes)):
            names = [names]
        keep = list(dict.fromkeys(["uid", *names]))
        missing = [str(n) for n in keep if not isinstance(n, str) or n not in self]
        if missing:
            raise DatasetError(f"dataset has no field(s) {', '.join(missing)}")
        return self._lend(self._data[keep])

    def select_prefixes(self, prefixes: Iterable[str]) -> Dataset:
        pre = set(prefixes)
        return self.select([f for f in self.fields() if f.split("/", 1)[0] in pre])

    def rename_field(self, old: str, new: str) -> Dataset:
        return self.rename_fields({old: new})

    def rename_fields(self, mapping: Mapping[str, str] | Callable[[str], str]) -> Dataset:
        """A new dataset with fields renamed, sharing these rows copy-on-write; ``uid``
        cannot be renamed."""
        names = list(self.fields())
        rename = (lambda n: mapping(n)) if callable(mapping) else (lambda n: mapping.get(n, n))
        new_names = [n if n == "uid" else rename(n) for n in names]
        if len(set(new_names)) != len(new_names):
            raise DatasetError(f"renaming would create duplicate fields: {new_names}")
        if not callable(mapping):
            unknown = set(mapping) - set(names)
            if unknown:
                raise DatasetError(f"cannot rename unknown fields: {', '.join(sorted(unknown))}")
        # a new dtype: setting names on a view's dtype would rename this dataset too
        dtype = self._data.dtype
        renamed = np.dtype({"names": new_names, "formats": [dtype[n] for n in names],
                            "offsets": [dtype.fields[n][1] for n in names], "itemsize": dtype.itemsize})
        return self._lend(self._data.view(renamed))

    def rename_prefix(self, old: str, new: str) -> Dataset:
        return self.rename_fields(lambda n: new + n[len(old) :] if n.startswith(old + "/") else n)

    # -- rows -----------------------------------------------------------------------
    def take(self, indices: Sequence[int] | np.ndarray) -> Dataset:
        return Dataset(self._rows(np.asarray(indices, dtype=np.intp)))

    def mask(self, mask: np.ndarray) -> Dataset:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (len(self),):
            raise DatasetError(f"mask has shape {mask.shape}, expected ({len(self)},)")
        return Dataset(self._rows(mask))

    def subset_uids(self, uids: np.ndarray) -> Dataset:
        """The items whose uid is in ``uids``, in this dataset's order."""
        return self.mask(np.isin(self._data["uid"], uids))

    def query(self, where: Mapping[str, Any] | Callable[[Dataset], np.ndarray]) -> Dataset:
        """Items matching every ``field: value`` (a value may be a list of accepted values),
        or for which a predicate returns True."""
        if callable(where):
            return self.mask(where(self))
        keep = np.ones(len(self), dtype=bool)
        for field, value in where.items():
            col = self[field]
            many = isinstance(value, (list, tuple, set)) or (isinstance(value, np.ndarray) and value.ndim > 0)
            accepted = list(value) if many else [value]
            accepted = [v.encode() if isinstance(v, str) else v for v in accepted]
            keep &= np.isin(col, np.asarray(accepted, dtype=col.dtype if col.dtype.kind == "S" else None))
        return self.mask(keep)

    def split_by(self, field: str) -> dict[Any, Dataset]:
        """One dataset per distinct value of ``field`` (strings decoded), in order of first sight."""
        col = self[field]
        if col.ndim != 1:
            raise DatasetError(f"cannot split by {field!r}: it is an array field")
        uniq, first, inverse = np.unique(col, return_index=True, return_inverse=True)
        out: dict[Any, Dataset] = {}
        for i in np.argsort(first, kind="stable"):
            key = uniq[i].item()
            out[text_of(key, field) if isinstance(key, bytes) else key] = Dataset(self._rows(inverse == i))
        return out

    # -- combining ------------------------------------------------------------------
    def innerjoin(self, *others: Dataset) -> Dataset:
        """Items present in every dataset, in this dataset's order.

        Fields are the union; a field present in several datasets takes its values from
        the first one that has it.
        """
        result = self
        for other in others:
            result = result._join_one(other)
        return result

    def _join_one(self, other: Dataset) -> Dataset:
        ia, ib = _match_uids(self._data["uid"], other._data["uid"])
        extra = [f for f in other.fields() if f not in self]
        out = np.empty(len(ia), dtype=self.descr() + [field_descr(other._data.dtype, n) for n in extra])
        lead = self._leading_bytes_in(out) if self._data.flags.c_contiguous else 0
        if lead:
            # this dataset's fields lead the output at the same offsets (a selection of
            # the leading fields too, whose rows are wider): copy those bytes of each row
            _rows_as_bytes(out)[:, :lead] = _rows_as_bytes(self._data)[ia, :lead]
        else:
            copy_fields(self._data[ia], out, self.fields())
        if extra:
            copy_fields(other._data[ib], out, extra)
        return Dataset(out)

    def _leading_bytes_in(self, out: np.ndarray) -> int:
        """How many leading bytes of each row ``out`` can take as they are from this
        dataset's rows: all its fields' bytes when they sit at the same offsets in both
        (``out`` packs them from 0, in this order), else 0."""
        own = self._data.dtype
        if any(out.dtype.fields[n][1] != own.fields[n][1] for n in own.names):
            return 0
        return sum(own[n].itemsize for n in own.names)

    @staticmethod
    def innerjoin_many(datasets: Sequence[Dataset]) -> Dataset:
        if not datasets:
            raise DatasetError("innerjoin needs at least one dataset")
        return datasets[0].innerjoin(*datasets[1:])

    def append(self, *others: Dataset, allow_duplicate_uids: bool = False) -> Dataset:
        return Dataset.append_many([self, *others], allow_duplicate_uids=allow_duplicate_uids)

    @staticmethod
    def append_many(datasets: Sequence[Dataset], allow_duplicate_uids: bool = False) -> Dataset:
        """Concatenate items; only fields common to all are kept (first dataset's order).

        Raises:
            DatasetError: a uid occurs twice and ``allow_duplicate_uids`` is False, or a
                common field has incompatible dtypes.
        """
        if not datasets:
            raise DatasetError("append needs at least one dataset")
        common = [f for f in datasets[0].fields() if all(f in d for d in datasets[1:])]
        descr = []
        for name in common:
            subs = [d._data.dtype[name] for d in datasets]
            base = subs[0]
            if base.kind == "S":
                width = max(s.itemsize for s in subs)
                descr.append((name, f"S{width}"))
                continue
            if any(s.shape != base.shape for s in subs):
                raise DatasetError(f"cannot append: field {name!r} has different shapes {[s.shape for s in subs]}")
            descr.append(field_descr(datasets[0]._data.dtype, name))
        total = sum(len(d) for d in datasets)
        out = np.empty(total, dtype=descr)
        pos = 0
        for d in datasets:
            if d._data.dtype == out.dtype:
                out[pos : pos + len(d)] = d._data
            else:
                copy_fields(d._data, out, common, start=pos)
            pos += len(d)
        if not allow_duplicate_uids:
            uids = np.sort(out["uid"])
            dup = uids[1:][uids[1:] == uids[:-1]]
            if len(dup):
                raise DatasetError(
                    f"cannot append: {len(np.unique(dup))} uid(s) occur more than once "
                    f"(first: {int(dup[0])}); the same items were connected twice"
                )
        return Dataset(out)
