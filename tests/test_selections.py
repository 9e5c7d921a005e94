"""The job graph walks selections use, against brute force on random DAGs."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cryohpc.errors import UserError
from cryohpc.model import Job
from cryohpc.selections import ancestors, chain, descendants, topological


@st.composite
def dags(draw):
    n = draw(st.integers(2, 9))
    edges = {(a, b) for a, b in itertools.combinations(range(1, n + 1), 2) if draw(st.booleans())}
    jobs = {}
    for i in range(1, n + 1):
        jobs[f"J{i}"] = Job(uid=f"J{i}", project_uid="P1", type="t", job_dir=f"J{i}",
                            parents=[f"J{a}" for a, b in sorted(edges) if b == i],
                            children=[f"J{b}" for a, b in sorted(edges) if a == i])
    return jobs, edges


def reach(edges, a):
    out, frontier = set(), {a}
    while frontier:
        frontier = {y for x, y in edges if x in frontier} - out
        out |= frontier
    return out


@settings(max_examples=200, deadline=None)
@given(dags(), st.data())
def test_chain_is_every_job_on_a_path_and_parents_come_first(graph, data):
    jobs, edges = graph
    n = len(jobs)
    a, b = data.draw(st.integers(1, n)), data.draw(st.integers(1, n))
    down = reach(edges, a)
    assert descendants(jobs, f"J{a}") == {f"J{x}" for x in down}
    assert ancestors(jobs, f"J{b}") == {f"J{x}" for x in range(1, n + 1) if b in reach(edges, x)}
    if b in down or a in reach(edges, b):
        lo, hi = (a, b) if b in down else (b, a)
        expected = {f"J{x}" for x in range(1, n + 1) if x in (lo, hi) or (x in reach(edges, lo) and hi in reach(edges, x))}
        got = chain(jobs, f"J{a}", f"J{b}")
        assert set(got) == expected and len(got) == len(expected)
        pos = {u: i for i, u in enumerate(got)}
        assert all(pos[f"J{x}"] < pos[f"J{y}"] for x, y in edges if f"J{x}" in pos and f"J{y}" in pos)
    else:
        with pytest.raises(UserError, match="not on one chain"):
            chain(jobs, f"J{a}", f"J{b}")
    order = topological(list(jobs.values()))
    assert sorted(order) == sorted(jobs)
