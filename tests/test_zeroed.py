"""Grids on 4 KB pages (zeroed.py): the same array np.zeros gives, writable, and a
request the machine cannot map is numpy's MemoryError, naming the size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.zeroed import zeroed


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(0, 40), min_size=1, max_size=4).map(tuple),
       dtype=st.sampled_from([np.float32, np.float64, np.complex64, np.uint8, np.int64]))
def test_zeroed_equals_np_zeros_and_takes_writes(shape, dtype):
    a = zeroed(shape, dtype)
    ref = np.zeros(shape, dtype)
    assert a.shape == ref.shape and a.dtype == ref.dtype and a.flags.c_contiguous and a.flags.writeable
    assert np.array_equal(a, ref)
    if a.size:
        a.reshape(-1)[-1] = 3
        assert a.reshape(-1)[-1] == 3 and not a.reshape(-1)[:-1].any()


def test_a_grid_larger_than_any_address_space_is_a_memory_error():
    with pytest.raises(MemoryError, match=r"cannot reserve \d+ MiB"):
        zeroed((1 << 24, 1 << 24, 1 << 8))
