"""Hypothesis properties of the EPS metric (SPEC §4): bounds, symmetry, invariances."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pinlite_edge.metrics import explainability_preservation_score

maps = st.integers(2, 6).flatmap(
    lambda b: st.tuples(
        arrays(np.float64, (b, 4, 5), elements=st.floats(0, 1, allow_nan=False, width=32)),
        arrays(np.float64, (b, 4, 5), elements=st.floats(0, 1, allow_nan=False, width=32)),
    )
)


@settings(max_examples=60, deadline=None)
@given(maps)
def test_eps_is_bounded_and_finite(pair):
    a, b = pair
    res = explainability_preservation_score(a, b)
    assert np.isfinite(res.per_clip).all()
    assert (res.per_clip >= -0.5 - 1e-12).all() and (res.per_clip <= 1.0 + 1e-12).all()
    assert ((res.iou >= 0) & (res.iou <= 1)).all()


@settings(max_examples=60, deadline=None)
@given(maps)
def test_spearman_term_is_symmetric(pair):
    a, b = pair
    np.testing.assert_allclose(explainability_preservation_score(a, b).spearman,
                               explainability_preservation_score(b, a).spearman, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(maps, st.floats(0.1, 10), st.floats(-1, 1))
def test_eps_is_invariant_to_positive_affine_rescaling(pair, scale, shift):
    a, b = pair
    base = explainability_preservation_score(a, b)
    moved = explainability_preservation_score(a * scale + shift, b)
    # ranks and top-k sets are unchanged by a monotone map, up to float rounding creating/removing ties
    if np.unique(a).size == a.size:
        np.testing.assert_allclose(moved.per_clip, base.per_clip, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, (3, 4, 4), elements=st.floats(0, 1, allow_nan=False, width=32)))
def test_eps_with_itself_is_one_unless_constant(a):
    res = explainability_preservation_score(a, a)
    for i in range(a.shape[0]):
        if np.ptp(a[i]) > 0:
            assert abs(res.per_clip[i] - 1.0) < 1e-9
        else:
            assert res.spearman[i] == 0.0
