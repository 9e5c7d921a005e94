"""read_images: any index list gives what indexing the whole stack gives, whether it is read
as one run or picked image by image, into a new array or into the caller's (pinned) one."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.compute.io_mrc import read_images, write_stack
from cryohpc.errors import InputFileError

N = 12


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    rng = np.random.default_rng(0)
    out = {}
    for dtype in (np.float32, np.float16):
        images = rng.normal(size=(N, 6, 6)).astype(dtype)
        path = tmp_path_factory.mktemp("mrc") / f"{np.dtype(dtype).name}.mrcs"
        write_stack(path, images, 1.0)
        out[dtype] = (path, images)
    return out


indices = st.one_of(
    st.tuples(st.integers(0, N - 1), st.integers(1, N)).map(lambda t: list(range(t[0], min(N, t[0] + t[1])))),  # runs
    st.lists(st.integers(-N, N - 1), max_size=2 * N),  # anything in range: repeats, reversed, negative
)


@settings(max_examples=60, deadline=None)
@given(idx=indices, dtype=st.sampled_from([np.float32, np.float16]), into=st.booleans())
def test_read_images_gives_what_indexing_gives(stacks, idx, dtype, into):
    path, images = stacks[dtype]
    want = images[np.asarray(idx, dtype=np.int64)].astype(np.float32)
    if into:
        out = np.full((len(idx), 6, 6), np.nan, np.float32)
        got = read_images(path, idx, out=out)
        assert got is out
    else:
        got = read_images(path, idx)
    assert got.dtype == np.float32 and np.array_equal(got, want)


@settings(max_examples=30, deadline=None)
@given(start=st.integers(0, N - 1), beyond=st.integers(1, 5), negative=st.booleans())
def test_an_index_off_the_stack_is_a_clear_error(stacks, start, beyond, negative):
    path, _ = stacks[np.float32]
    bad = -N - beyond if negative else N - 1 + beyond
    idx = list(range(start, N)) + [bad]  # a run that walks off the end, or a stray negative
    with pytest.raises(InputFileError, match=f"index {bad} is out of bounds for a stack of {N} images"):
        read_images(path, idx)


@settings(max_examples=20, deadline=None)
@given(idx=indices)
def test_images_read_are_a_copy_not_a_view_of_the_file(tmp_path_factory, idx):
    """Overwriting the stack in place after reading leaves what was read unchanged."""
    path = tmp_path_factory.mktemp("live") / "s.mrcs"
    images = np.random.default_rng(1).normal(size=(N, 6, 6)).astype(np.float32)
    write_stack(path, images, 1.0)
    got = read_images(path, idx)
    every = read_images(path)
    with open(path, "r+b") as f:
        f.seek(-images.nbytes, 2)
        f.write(np.zeros_like(images).tobytes())
    assert np.array_equal(got, images[np.asarray(idx, dtype=np.int64)])
    assert np.array_equal(every, images)
