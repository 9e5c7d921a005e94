"""Selections, drops and renames share rows copy-on-write: whatever is done to one
dataset through its API, every other dataset keeps the values a copy would have kept.

A hypothesis state machine runs random sequences of selects, renames, writes (through
``ds[field] = values`` and raw writes into the arrays the dataset hands out), row
picks, copies, saves, pickles and deletions, beside a model in which every derived
dataset is a deep copy, and checks every live dataset against its model after each step.
"""

from __future__ import annotations

import gc
import io
import pickle
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cryosparc.dataset import Dataset as CsDataset
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cryohpc.dataset import Dataset
from cryohpc.errors import DatasetError

ROWS = 12


def _source() -> tuple[Dataset, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    ds = Dataset.from_columns({
        "blob/path": np.array([f"stack_{i % 3}.mrcs".encode() for i in range(ROWS)]),
        "blob/idx": np.arange(ROWS, dtype=np.uint32),
        "ctf/df1_A": rng.uniform(1e4, 2e4, ROWS).astype(np.float32),
        "alignments3D/pose": rng.normal(size=(ROWS, 3)).astype(np.float32),
        "alignments3D/split": (np.arange(ROWS) % 2).astype(np.uint32),
    })
    return ds, {f: np.array(ds[f]) for f in ds.fields()}


def _values_like(column: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if column.dtype.kind == "S":
        return np.array([f"v{seed}_{i}".encode()[: column.dtype.itemsize] for i in range(len(column))],
                        dtype=column.dtype)
    return rng.integers(0, 1000, size=column.shape).astype(column.dtype)


def _same(theirs: CsDataset, model: dict[str, np.ndarray]) -> None:
    assert theirs.fields() == list(model)
    for f, v in model.items():
        np.testing.assert_array_equal(np.asarray(theirs[f]).astype(v.dtype), v, err_msg=f)


class Sharing(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        ds, model = _source()
        self.live: list[tuple[Dataset, dict[str, np.ndarray]]] = [(ds, model)]
        self.dir = tempfile.mkdtemp(prefix="cow-")

    def _pick(self, data: st.DataObject) -> int:
        return data.draw(st.integers(0, len(self.live) - 1), label="dataset")

    @rule(data=st.data())
    def select(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        leading = st.integers(0, len(ds.fields())).map(lambda k: ds.fields()[:k])  # the join's row-copy path
        names = data.draw(leading | st.lists(st.sampled_from(ds.fields()), max_size=6), label="names")
        sel = ds.select(names)
        keep = list(dict.fromkeys(["uid", *names]))
        assert sel.fields() == keep
        self.live.append((sel, {f: model[f].copy() for f in keep}))

    @rule(data=st.data())
    def drop(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        gone = data.draw(st.sets(st.sampled_from(ds.fields())), label="dropped")
        out = ds.drop_fields(gone)
        self.live.append((out, {f: model[f].copy() for f in ds.fields() if f == "uid" or f not in gone}))

    @rule(data=st.data())
    def rename(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        others = [f for f in ds.fields() if f != "uid"]
        if not others:
            return
        old = data.draw(st.sampled_from(others), label="old")
        new = f"renamed/{old.replace('/', '_')}_{len(self.live)}"
        out = ds.rename_field(old, new)
        self.live.append((out, {(new if f == old else f): model[f].copy() for f in ds.fields()}))

    def _write(self, data: st.DataObject, seed: int):
        """A dataset, its model, one of its non-uid fields and new values for it."""
        ds, model = self.live[self._pick(data)]
        others = [f for f in ds.fields() if f != "uid"]
        if not others:
            return None
        field = data.draw(st.sampled_from(others), label="field")
        return ds, model, field, _values_like(model[field], seed)

    @rule(data=st.data(), seed=st.integers(0, 10**6))
    def assign(self, data: st.DataObject, seed: int) -> None:
        if (write := self._write(data, seed)) is None:
            return
        ds, model, field, values = write
        ds[field] = values
        model[field] = values.copy()

    @rule(data=st.data(), seed=st.integers(0, 10**6), through_array=st.booleans())
    def raw_write(self, data: st.DataObject, seed: int, through_array: bool) -> None:
        """A write into a handed-out array lands only where the dataset owns its rows
        alone; anywhere else numpy refuses it (read-only)."""
        if (write := self._write(data, seed)) is None:
            return
        ds, model, field, values = write
        target = ds.array[field] if through_array else ds[field]
        try:
            target[...] = values
        except ValueError as err:
            assert "read-only" in str(err)
            return
        model[field] = values.copy()

    @rule(data=st.data())
    def take_rows(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        picks = st.lists(st.integers(0, len(ds) - 1), max_size=ROWS) if len(ds) else st.just([])
        rows = np.array(data.draw(picks, label="rows"), dtype=np.intp)
        out = ds.take(rows)
        assert out.array.dtype.itemsize == sum(out.array.dtype[f].itemsize for f in out.fields())
        self.live.append((out, {f: v[rows] for f, v in model.items()}))

    @rule(data=st.data())
    def joined(self, data: st.DataObject) -> None:
        """A join reads either side's rows however they are laid out (a selection of the
        leading fields, whose bytes lead the output, takes the row-copy path)."""
        (a, ma), (b, mb) = self.live[self._pick(data)], self.live[self._pick(data)]
        if len(np.unique(ma["uid"])) < len(a) or len(np.unique(mb["uid"])) < len(b):
            return  # uids are unique within a dataset that is joined
        out = a.innerjoin(b)
        partner = {int(u): i for i, u in enumerate(mb["uid"])}
        ia = np.array([i for i, u in enumerate(ma["uid"]) if int(u) in partner], dtype=np.intp)
        ib = np.array([partner[int(ma["uid"][i])] for i in ia], dtype=np.intp)
        model = {f: v[ia] for f, v in ma.items()}
        model.update({f: v[ib] for f, v in mb.items() if f not in ma})
        self.live.append((out, model))

    @rule(data=st.data())
    def copy(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        self.live.append((ds.copy(), {f: v.copy() for f, v in model.items()}))

    @rule(data=st.data())
    def pickled(self, data: st.DataObject) -> None:
        ds, model = self.live[self._pick(data)]
        self.live.append((pickle.loads(pickle.dumps(ds)), {f: v.copy() for f, v in model.items()}))

    @rule(data=st.data(), fmt=st.sampled_from(["numpy", "csdat", "lz4"]))
    def saved(self, data: st.DataObject, fmt: str) -> None:
        """A file holds the dataset's values, whichever rows it shares, and
        cryosparc-tools reads it."""
        ds, model = self.live[self._pick(data)]
        path = Path(self.dir) / f"{fmt}.cs"
        ds.save(path, csdat=fmt != "numpy", compression="lz4" if fmt == "lz4" else None)
        _same(CsDataset.load(path), model)

    @rule(data=st.data())
    def handed_to_peers(self, data: st.DataObject) -> None:
        """The array a dataset hands out is one numpy saves and cryosparc-tools takes."""
        ds, model = self.live[self._pick(data)]
        buf = io.BytesIO()
        np.save(buf, ds.array, allow_pickle=False)
        loaded = np.load(io.BytesIO(buf.getvalue()), allow_pickle=False)
        assert list(loaded.dtype.names) == list(model)
        for f, v in model.items():
            np.testing.assert_array_equal(loaded[f], v)
        _same(CsDataset(ds.array), model)

    @precondition(lambda self: len(self.live) > 1)
    @rule(data=st.data())
    def forget(self, data: st.DataObject) -> None:
        del self.live[self._pick(data)]
        gc.collect()

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @invariant()
    def every_dataset_holds_its_own_values(self) -> None:
        for ds, model in self.live:
            assert ds.fields() == list(model)
            for f, v in model.items():
                np.testing.assert_array_equal(ds[f], v, err_msg=f)


Sharing.TestCase.settings = settings(max_examples=150, stateful_step_count=25, deadline=None)
test_datasets_share_rows_copy_on_write = Sharing.TestCase


def test_a_selection_copies_nothing_until_it_is_written():
    ds, _ = _source()
    sel = ds.select(["ctf/df1_A", "blob/path"])
    assert np.shares_memory(sel["ctf/df1_A"], ds["ctf/df1_A"])
    sel["ctf/df1_A"] = np.zeros(ROWS, np.float32)
    assert not np.shares_memory(sel["ctf/df1_A"], ds["ctf/df1_A"])
    assert ds["ctf/df1_A"].min() > 0


def test_rows_are_writable_again_once_every_selection_is_gone():
    ds, _ = _source()
    sel = ds.select(["ctf/df1_A"])
    assert not ds["ctf/df1_A"].flags.writeable and not ds.array.flags.writeable
    del sel
    gc.collect()
    assert ds["ctf/df1_A"].flags.writeable and ds.array.flags.writeable
    ds["ctf/df1_A"][:3] = 1.0  # the owner writes in place, as before any selection
    assert (ds["ctf/df1_A"][:3] == 1.0).all()


def test_a_selections_array_is_gap_free_and_its_own():
    ds, model = _source()
    sel = ds.select(["alignments3D/pose", "blob/path"])
    arr = sel.array
    assert arr.dtype.itemsize == 8 + 12 + arr.dtype["blob/path"].itemsize
    assert not np.shares_memory(arr, ds["uid"])
    arr["alignments3D/pose"][0] = 99.0  # owned now: writable, and the source is untouched
    np.testing.assert_array_equal(ds["alignments3D/pose"], model["alignments3D/pose"])


def test_select_names_a_missing_field_and_keeps_a_repeated_one_once():
    ds, _ = _source()
    with pytest.raises(DatasetError, match="no field.*ctf/nope"):
        ds.select(["ctf/df1_A", "ctf/nope"])
    assert ds.select(["ctf/df1_A", "ctf/df1_A", "uid"]).fields() == ["uid", "ctf/df1_A"]
    assert ds.select("ctf/df1_A").fields() == ["uid", "ctf/df1_A"]


def test_renaming_leaves_the_source_named_as_it_was():
    ds, _ = _source()
    renamed = ds.rename_prefix("ctf", "ctf_old")
    assert "ctf/df1_A" in ds.fields() and "ctf_old/df1_A" in renamed.fields()
    assert "ctf_old/df1_A" not in ds.fields()
