"""The space table: unification, refinement and index maps (the algebra everything rests on)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cgap_graph.ir.expr import SpaceTable


def test_union_and_width():
    t = SpaceTable()
    a, b = t.new(4), t.new(4)
    t.unify(("S", a), ("S", b), "test")
    assert t.find(a) == t.find(b)
    assert t.width(("S", b)) == 4


def test_fixed_freezes_space():
    t = SpaceTable()
    a = t.new(3)
    t.unify(("S", a), ("F", 3), "tied")
    t.finalize()
    assert "tied" in t.frozen[t.find(a)]


def test_concat_refines_and_aligns():
    t = SpaceTable()
    whole, x, y = t.new(10), t.new(4), t.new(6)
    t.unify(("S", whole), ("C", (("S", x), ("S", y))), "cat")
    assert t.norm(("S", whole)) == ("C", (("S", x), ("S", y)))
    # a second concat with different cut points refines both sides to a common partition
    p, q = t.new(2), t.new(8)
    t.unify(("C", (("S", p), ("S", q))), ("S", whole), "cat2")
    leaves = list(t.leaves(("S", whole)))
    assert [t.width(("S", s)) for s in leaves] == [2, 2, 6]


def test_factor_into_heads():
    t = SpaceTable()
    e = t.new(12)
    h, d = t.factor(("S", e), [3, 4], "view")
    assert t.width(h) == 3 and t.width(d) == 4
    # removing head_dim unit 1 keeps positions h*4 + {0, 2, 3}
    pos = t.positions(("S", e), {d[1]: np.array([0, 2, 3])})
    assert pos.tolist() == [0, 2, 3, 4, 6, 7, 8, 10, 11]


def test_flatten_positions_and_scales():
    t = SpaceTable()
    c = t.new(3)
    e = ("P", (("S", c), ("F", 4)))  # a conv output of 3 channels flattened over 2x2
    sel = {c: np.array([0, 2, 2])}
    assert t.positions(e, sel).tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 8, 9, 10, 11]
    counts = {c: np.bincount([0, 2, 2], minlength=3).astype(float)}
    assert t.scales(e, sel, counts, None).tolist() == [1.0] * 4 + [0.5] * 8


def test_split_marks_follow_written_ids():
    t = SpaceTable()
    dq, dk = t.new(4), t.new(4)
    t.unify(("S", dq), ("S", dk), "q.k")
    both = ("C", (("S", dq), ("S", dk)))
    sel = {t.find(dq): np.array([0, 1, 2, 3, 3])}
    counts = {t.find(dq): np.array([1, 1, 1, 2.0])}
    f = t.scales(both, sel, counts, {dk})
    assert f.tolist() == [1, 1, 1, 1, 1] + [1, 1, 1, 0.5, 0.5]


@st.composite
def layouts(draw):
    """A random layout: concat of products of fresh spaces and fixed dims."""
    t = SpaceTable()
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        factors = []
        for _ in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                factors.append(("S", t.new(draw(st.integers(1, 4)))))
            else:
                factors.append(("F", draw(st.integers(1, 3))))
        parts.append(("P", tuple(factors)) if len(factors) > 1 else factors[0])
    return t, ("C", tuple(parts)) if len(parts) > 1 else parts[0]


@settings(max_examples=150, deadline=None)
@given(layouts(), st.data())
def test_positions_match_explicit_labelling(tl, data):
    """positions() equals selecting, by unit labels, from an explicit enumeration of the layout."""
    t, e = tl
    leaves = sorted(set(t.leaves(e)))
    sel = {}
    for leaf in leaves:
        w = t.width(("S", leaf))
        sel[leaf] = np.array(data.draw(st.lists(st.integers(0, w - 1), min_size=1, max_size=w + 2)))
    # explicit: label every position with its unit per leaf, then rebuild the new layout
    labels = {leaf: t.unit_ids(e, leaf) for leaf in leaves}
    pos = t.positions(e, sel)
    for leaf in leaves:
        got = labels[leaf][pos]
        # positions carrying this leaf must follow the selection order, block by block
        got = got[got >= 0]
        w = len(sel[leaf])
        assert len(got) % w == 0
        assert (got.reshape(-1, w) == sel[leaf]).all() or (got.reshape(w, -1) == sel[leaf][:, None]).all()
    n_new = len(pos)
    assert n_new == len(t.scales(e, sel, {}, None))
