"""Dataset semantics and both .cs formats, checked against cryosparc-tools."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
from cryosparc.dataset import Dataset as CsDataset
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.dataset import Dataset
from cryohpc.dataset.blocks import THREAD_ROWS, copy_fields
from cryohpc.dataset.csfile import CSDAT_MAGIC, NUMPY_MAGIC
from cryohpc.dataset.hashing import dedupe_rows, match_keys
from cryohpc.errors import DatasetError


def particles(n: int = 50, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    return Dataset.from_columns({
        "blob/path": [f"J1/imported/stack_{i % 3}.mrcs" if i % 7 else "" for i in range(n)],
        "blob/idx": np.arange(n, dtype=np.uint32),
        "blob/shape": np.tile(np.array([64, 64], np.uint32), (n, 1)),
        "ctf/df1_A": rng.uniform(1e4, 2e4, n).astype(np.float32),
        "alignments3D/pose": rng.normal(size=(n, 3)).astype(np.float32),
        "alignments3D/split": (np.arange(n) % 2).astype(np.uint32),
    })


@pytest.mark.parametrize("fmt", ["numpy", "csdat", "lz4"])
def test_roundtrip_preserves_every_field(tmp_path, fmt):
    ds = particles()
    path = tmp_path / "p.cs"
    ds.save(path, csdat=fmt != "numpy", compression="lz4" if fmt == "lz4" else None)
    assert path.read_bytes()[:6] == (NUMPY_MAGIC if fmt == "numpy" else CSDAT_MAGIC)
    back = Dataset.load(path)
    assert back == ds
    assert back.strings("blob/path")[:2] == ["", "J1/imported/stack_1.mrcs"]


@pytest.mark.parametrize("fmt", ["numpy", "csdat", "lz4"])
def test_cryosparc_tools_reads_our_files(tmp_path, fmt):
    ds = particles()
    path = tmp_path / "ours.cs"
    ds.save(path, csdat=fmt != "numpy", compression="lz4" if fmt == "lz4" else None)
    theirs = CsDataset.load(path)
    assert len(theirs) == len(ds)
    assert np.array_equal(theirs["uid"], ds["uid"])
    assert list(theirs["blob/path"]) == ds.strings("blob/path")
    assert np.array_equal(theirs["alignments3D/pose"], ds["alignments3D/pose"])
    assert np.array_equal(theirs["blob/shape"], ds["blob/shape"])


@pytest.mark.parametrize("fmt", [1, 2])
def test_we_read_cryosparc_tools_files(tmp_path, fmt):
    theirs = CsDataset.allocate(30, [("blob/path", "O"), ("blob/idx", "<u4"), ("ctf/shift_A", "<f4", (2,))])
    theirs["blob/path"] = [f"J9/x_{i % 4}.mrcs" for i in range(30)]
    theirs["blob/idx"] = np.arange(30)
    theirs["ctf/shift_A"] = np.arange(60, dtype=np.float32).reshape(30, 2)
    path = tmp_path / "theirs.cs"
    theirs.save(path, format=fmt)
    ours = Dataset.load(path)
    assert np.array_equal(ours["uid"], theirs["uid"])
    assert ours.strings("blob/path") == list(theirs["blob/path"])
    assert np.array_equal(ours["ctf/shift_A"], theirs["ctf/shift_A"])


def test_empty_dataset_roundtrips_in_csdat(tmp_path):
    ds = particles(0)
    ds.save(tmp_path / "e.cs", compression="lz4")
    assert len(Dataset.load(tmp_path / "e.cs")) == 0
    assert len(CsDataset.load(tmp_path / "e.cs")) == 0


def test_large_numpy_files_are_memory_mapped(tmp_path):
    ds = particles(1000)
    ds.save(tmp_path / "big.cs")
    mapped = Dataset.load(tmp_path / "big.cs", mmap=True)
    assert isinstance(mapped.array, np.memmap)
    assert mapped == ds
    mapped["ctf/df1_A"] = 1.0  # copy-on-write: the file is untouched
    assert Dataset.load(tmp_path / "big.cs") == ds


@pytest.mark.parametrize("content, expect", [
    (b"hello world, not a dataset", "not a .cs file"),
    (b"", "not a .cs file"),
])
def test_garbage_file_gives_named_error(tmp_path, content, expect):
    path = tmp_path / "bad.cs"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=expect) as err:
        Dataset.load(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_truncated_files_give_named_error(tmp_path, compression):
    path = tmp_path / "t.cs"
    particles(200).save(path, csdat=compression is not None, compression=compression)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated|corrupt") as err:
        Dataset.load(path, mmap=False)
    assert str(path) in str(err.value)


def test_missing_file_and_missing_uid(tmp_path):
    with pytest.raises(DatasetError, match="no such file; a .cs file was expected"):
        Dataset.load(tmp_path / "nope.cs")
    np.save(tmp_path / "nouid.npy", np.zeros(3, dtype=[("x", "<f4")]))
    with pytest.raises(DatasetError, match="no 'uid' field"):
        Dataset.load(tmp_path / "nouid.npy")


def test_innerjoin_keeps_first_order_and_unions_fields():
    a = particles(20)
    b = a.select_prefixes(["ctf"]).take(np.arange(19, 4, -1))  # reversed subset
    b = b.rename_field("ctf/df1_A", "ctf/df2_A")
    joined = a.select_prefixes(["blob"]).innerjoin(b)
    assert len(joined) == 15
    assert np.array_equal(joined["uid"], a["uid"][5:])  # a's order
    assert np.allclose(joined["ctf/df2_A"], a["ctf/df1_A"][5:])
    assert joined.fields()[:2] == ["uid", "blob/path"]


def test_innerjoin_agrees_with_cryosparc_tools():
    a, rng = particles(500), np.random.default_rng(3)
    b = a.select_prefixes(["ctf"]).take(rng.permutation(500)[:300])
    ours = a.select_prefixes(["blob"]).innerjoin(b)
    ca = CsDataset(a.select_prefixes(["blob"]).array)
    cb = CsDataset(b.array)
    theirs = ca.innerjoin(cb)
    assert set(ours["uid"].tolist()) == set(theirs["uid"].tolist())
    order = np.argsort(ours["uid"])
    torder = np.argsort(theirs["uid"])
    assert np.array_equal(ours["ctf/df1_A"][order], theirs["ctf/df1_A"][torder])


def test_append_keeps_common_fields_and_refuses_duplicates():
    a, b = particles(10, seed=1), particles(5, seed=2).drop_fields(["ctf/df1_A"])
    out = a.append(b)
    assert len(out) == 15 and "ctf/df1_A" not in out and "blob/idx" in out
    with pytest.raises(DatasetError, match="occur more than once"):
        a.append(a)
    assert len(a.append(a, allow_duplicate_uids=True)) == 20


def test_append_widens_string_fields():
    a = Dataset.from_columns({"blob/path": ["a"]})
    b = Dataset.from_columns({"blob/path": ["a/much/longer/path.mrcs"]})
    assert a.append(b).strings("blob/path") == ["a", "a/much/longer/path.mrcs"]


def test_fields_add_drop_rename():
    ds = particles(4)
    ds2 = ds.add_fields([("ctf/df2_A", "<f4")], {"ctf/df2_A": [1, 2, 3, 4]})
    assert ds2["ctf/df2_A"].tolist() == [1, 2, 3, 4] and "ctf/df2_A" not in ds
    assert "ctf/df1_A" not in ds.drop_fields(["ctf/df1_A"])
    assert ds.drop_fields(lambda f: f.startswith("alignments3D/")).prefixes() == ["blob", "ctf"]
    assert ds.rename_prefix("alignments3D", "alignments_class_0").prefixes() == ["blob", "ctf", "alignments_class_0"]
    with pytest.raises(DatasetError, match="unknown fields"):
        ds.drop_fields(["nope"])
    with pytest.raises(DatasetError, match="no field 'nope'"):
        ds["nope"]


def test_query_mask_subset_split():
    ds = particles(30)
    q = ds.query({"blob/path": "J1/imported/stack_1.mrcs"})
    assert set(q.strings("blob/path")) == {"J1/imported/stack_1.mrcs"}
    assert len(ds.query({"alignments3D/split": [0]})) == 15
    assert len(ds.query(lambda d: d["blob/idx"] < 10)) == 10
    assert len(ds.mask(ds["blob/idx"] % 3 == 0)) == 10
    sub = ds.subset_uids(ds["uid"][[5, 1]])
    assert sub["blob/idx"].tolist() == [1, 5]  # dataset order, not the order asked
    halves = ds.split_by("alignments3D/split")
    assert sorted(halves) == [0, 1] and sum(len(h) for h in halves.values()) == 30
    by_path = ds.split_by("blob/path")
    assert "" in by_path and all(isinstance(k, str) for k in by_path)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=13), max_size=300), st.integers(1, 13))
def test_hashed_string_codes_equal_the_sorting_ones(values, width):
    """The compiled dedupe (used from 50,000 rows on) gives every row the code of its
    value, one code per distinct value, first rows where each value first appears."""
    col = np.array([v[:width] for v in values], dtype=f"S{width}")
    codes, firsts = dedupe_rows(col)
    assert len(firsts) == len(set(col.tolist()))
    assert (col[firsts][codes] == col).all()
    assert len({bytes(x) for x in col[firsts]}) == len(firsts)
    assert firsts.tolist() == sorted(firsts.tolist()) and all(codes[f] == i for i, f in enumerate(firsts))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=24), max_size=200), st.sampled_from([8, 16, 24, 5, 13]), st.integers(0, 7),
       st.integers(1, 3))
def test_string_codes_of_a_field_read_in_place_equal_those_of_a_copy(values, width, pad, step):
    """A string field inside a structured array (unaligned, strided, every n-th row) is
    coded where it lies, and gets exactly the codes of its contiguous copy."""
    rows = np.zeros(len(values), dtype=[("pad", f"V{pad}") if pad else ("pad", "u1"), ("s", f"S{width}"),
                                        ("x", "<f4")])
    rows["s"] = [v[:width] for v in values]
    field = rows[::step]["s"]
    codes, firsts = dedupe_rows(field)
    copy_codes, copy_firsts = dedupe_rows(np.ascontiguousarray(field))
    assert codes.tolist() == copy_codes.tolist() and firsts.tolist() == copy_firsts.tolist()
    assert (field[firsts][codes] == field).all()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=6).map(lambda b: b.rstrip(b"\0")), max_size=20))
def test_string_fields_read_as_text_or_refused_naming_the_row_and_value(values):
    """A file's string field need not be UTF-8: ``strings`` and ``split_by`` answer with
    text or a DatasetError that names the field, the first bad row and its bytes."""
    ds = Dataset.from_columns({"blob/path": np.array(values, dtype="S6")}) if values else \
        Dataset.allocate(0, [("blob/path", "S6")])
    bad = [i for i, v in enumerate(values) if v.decode(errors="replace").encode() != v]  # not UTF-8
    if not bad:
        assert ds.strings("blob/path") == [v.decode() for v in values]
        assert set(ds.split_by("blob/path")) == {v.decode() for v in values}
        return
    with pytest.raises(DatasetError) as err:
        ds.strings("blob/path")
    assert str(err.value) == f"field 'blob/path' row {bad[0] + 1} holds {values[bad[0]]!r}, which is not UTF-8 text"
    with pytest.raises(DatasetError, match=r"field 'blob/path' holds b.*, which is not UTF-8 text"):
        ds.split_by("blob/path")


_WORDS = st.sampled_from([b"", b"J1/a.mrcs", b"J1/b.mrcs", b"J2/c.mrc", b"x"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(_WORDS, min_size=1, max_size=3), max_size=40), st.sampled_from([None, "lz4"]))
def test_csdat_string_fields_sharing_values_read_back_in_cryosparc_tools(rows, compression):
    """Several string fields drawing from one small pool (as blob/path and a micrograph
    path often do): each distinct value sits once in the CSDAT heap, which is how
    cryosparc-tools reads it (a repeated value read back as the empty string)."""
    import tempfile

    k = max((len(r) for r in rows), default=1)
    cols = {f"s/f{j}": np.array([r[j] if j < len(r) else b"" for r in rows], dtype="S16") for j in range(k)}
    ds = Dataset.from_columns({"uid": np.arange(1, len(rows) + 1, dtype=np.uint64), **cols}) if rows else \
        Dataset.allocate(0, [(name, "S16") for name in cols])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.cs")
        ds.save(path, csdat=True, compression=compression)
        theirs = CsDataset.load(path)
        ours = Dataset.load(path)
    for name, values in cols.items():
        assert [v.encode() if isinstance(v, str) else v for v in theirs[name]] == values.tolist(), name
        assert ours[name].tolist() == values.tolist(), name


@pytest.mark.parametrize("n", [1_000, 40_000])
def test_csdat_stores_noise_fields_raw_and_both_readers_get_every_value(tmp_path, n):
    """Fields lz4 cannot shrink are written uncompressed (CSDAT names its compressed
    fields); the file reads back equal here and in cryosparc-tools either way."""
    rng = np.random.default_rng(n)
    ds = Dataset.allocate(n, [("blob/path", "S32"), ("ctf/df1_A", "<f4"), ("alignments3D/pose", "<f4", (3,)),
                              ("alignments3D/split", "<u4"), ("blob/idx", "<u4")])
    ds["blob/path"] = np.array([f"J3/stack_{i // 100:05d}.mrcs".encode() for i in range(n)])
    ds["ctf/df1_A"] = rng.random(n, dtype=np.float32)
    ds["alignments3D/pose"] = rng.normal(size=(n, 3)).astype(np.float32)
    ds["alignments3D/split"] = np.arange(n) % 2
    ds["blob/idx"] = np.arange(n) % 100
    path = tmp_path / "p.cs"
    ds.save(path, compression="lz4")
    raw = path.read_bytes()
    header = json.loads(raw[10 : 10 + struct.unpack("<I", raw[6:10])[0]])
    assert header["compression"] == "lz4"
    assert {"blob/path", "alignments3D/split", "blob/idx"} <= set(header["compressed_fields"])
    assert not {"uid", "ctf/df1_A", "alignments3D/pose"} & set(header["compressed_fields"])
    assert Dataset.load(path) == ds
    theirs = CsDataset.load(path)
    for name in ds.fields():
        if name == "blob/path":
            assert [s.encode() for s in theirs[name]] == ds[name].tolist()
        else:
            assert np.array_equal(theirs[name], ds[name]), name


@settings(max_examples=60, deadline=None)
@given(st.sets(st.integers(0, 2**64 - 1), max_size=300), st.sets(st.integers(0, 2**64 - 1), max_size=300))
def test_hashed_uid_matching_equals_a_dictionary(a, b):
    a, b = np.array(sorted(a), np.uint64), np.array(sorted(b, reverse=True), np.uint64)
    partner = match_keys(a, b)
    where = {int(k): i for i, k in enumerate(b)}
    assert partner.tolist() == [where.get(int(k), -1) for k in a]


def test_large_joins_and_saves_take_the_hashed_paths_and_agree(tmp_path):
    """At 60,000 rows (past the threshold): join and CSDAT strings as cryosparc-tools has them."""
    rng = np.random.default_rng(3)
    n = 60_000
    ds = Dataset.allocate(n, [("blob/path", "S24"), ("ctf/df1_A", "<f4")])
    ds["blob/path"] = np.array([f"J1/stack_{i:04d}.mrcs".encode() for i in rng.integers(0, 700, n)])
    ds["ctf/df1_A"] = rng.random(n, dtype=np.float32)
    other = ds.take(rng.permutation(n)[: n // 3]).select(["ctf/df1_A"]).rename_field("ctf/df1_A", "ctf/df2_A")
    ours = ds.innerjoin(other)
    theirs = CsDataset(ds.array).innerjoin(CsDataset(other.array))
    assert len(ours) == len(theirs) == n // 3
    assert np.array_equal(ours["uid"], theirs["uid"]) and np.array_equal(ours["ctf/df2_A"], theirs["ctf/df2_A"])
    ds.save(tmp_path / "x.cs", compression="lz4")
    back = CsDataset.load(tmp_path / "x.cs")
    assert [s.encode() if isinstance(s, str) else s for s in back["blob/path"]] == ds["blob/path"].tolist()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3 * THREAD_ROWS + 7), st.integers(0, 1000), st.booleans())
def test_copying_fields_block_by_block_on_threads_equals_assigning_each_field(n, start, to_columns):
    rng = np.random.default_rng(n)
    dtype = np.dtype([("uid", "<u8"), ("path", "S12"), ("shape", "<u4", (2,)), ("df", "<f4"), ("pad", "u1")])
    src = np.zeros(n, dtype)
    src["uid"] = rng.integers(0, 2**63, n, dtype=np.uint64)
    src["path"] = rng.integers(0, 9, n).astype("S12")
    src["shape"] = rng.integers(0, 2**31, (n, 2))
    src["df"] = rng.random(n, dtype=np.float32)
    names = ["uid", "path", "shape", "df"]
    if to_columns:
        dst = {name: np.zeros((start + n, *dtype[name].shape), dtype[name].base) for name in names}
    else:
        dst = np.zeros(start + n, dtype)
    copy_fields(src, dst, names, start=start)
    for name in names:
        assert np.array_equal(dst[name][start:], src[name])
        assert not np.any(dst[name][:start])  # rows before start untouched


def test_hash_kernels_load_from_numbas_cache_in_the_next_process(tmp_path):
    """A kernel numba cannot find in its cache is compiled again in every process that
    joins or saves a large dataset (0.7-2.4 s); the second process must find both."""
    probe = (
        "import json, numpy as np\n"
        "from cryohpc.dataset.hashing import dedupe_rows, match_keys\n"
        "from cryohpc.dataset import hash_kernels as k\n"
        "match_keys(np.arange(10, dtype=np.uint64), np.arange(5, dtype=np.uint64))\n"
        "dedupe_rows(np.array([b'a', b'bb', b'a']))\n"
        "print(json.dumps({f.__name__: [sum(f.stats.cache_hits.values()), sum(f.stats.cache_misses.values())]"
        " for f in (k.match, k.dedupe)}))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    runs = [json.loads(subprocess.run([sys.executable, "-c", probe], env=env, check=True, capture_output=True,
                                      text=True).stdout) for _ in range(2)]
    assert runs[0] == {"match": [0, 1], "dedupe": [0, 1]}  # the first compiles and stores
    assert runs[1] == {"match": [1, 0], "dedupe": [1, 0]}  # the second loads, compiles nothing
