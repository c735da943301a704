import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from pinlite_edge.errors import InputError, UsageError
from pinlite_edge.metrics import (classification_metrics, explainability_preservation_score, roc_auc, spearman_rows,
                                  top_fraction_mask)
from pinlite_edge.metrics.eps import top_fraction_iou


def test_spearman_term_equals_scipy_on_maps_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(8, 16, 16)).astype(np.float32)  # many ties
    b = rng.integers(0, 5, size=(8, 16, 16)).astype(np.float32)
    res = explainability_preservation_score(a, b)
    for i in range(8):
        expected = spearmanr(a[i].ravel(), b[i].ravel()).statistic
        assert res.spearman[i] == pytest.approx(expected, abs=1e-12)


def test_top20_iou_on_hand_made_maps():
    a = np.zeros((5, 5))
    b = np.zeros((5, 5))
    a.flat[[0, 1, 2, 3, 4]] = [9, 8, 7, 6, 5]  # top ceil(0.2*25)=5 of a: indices 0..4
    b.flat[[3, 4, 5, 6, 7]] = [9, 8, 7, 6, 5]  # top of b: 3..7 -> overlap {3,4}: IoU 2/8
    res = explainability_preservation_score(a, b)
    assert res.iou[0] == pytest.approx(2 / 8)


def test_top_fraction_ties_go_to_lower_flat_index():
    m = top_fraction_mask(np.zeros((1, 10)))  # constant map: k = 2 -> the first two entries
    assert m[0].nonzero()[0].tolist() == [0, 1]
    assert top_fraction_mask(np.zeros((1, 11)))[0].sum() == math.ceil(0.2 * 11)


def test_eps_of_a_map_with_itself_is_one():
    a = np.random.default_rng(1).random((4, 16, 16))
    res = explainability_preservation_score(a, a)
    np.testing.assert_allclose(res.per_clip, 1.0)
    assert res.mean == pytest.approx(1.0) and res.std == pytest.approx(0.0)


def test_constant_maps_count_correlation_zero_and_are_reported():
    a = np.random.default_rng(2).random((3, 16, 16))
    b = a.copy()
    b[1] = 0.5
    res = explainability_preservation_score(a, b)
    assert res.num_constant == 1
    assert res.spearman[1] == 0.0
    assert res.per_clip[1] == pytest.approx(0.5 * res.iou[1])


def test_single_map_and_resize_to_common_shape():
    a = np.random.default_rng(3).random((16, 16))
    res = explainability_preservation_score(a, np.kron(a, np.ones((2, 2))))  # (32, 32) student map
    assert res.per_clip.shape == (1,)
    assert res.mean > 0.9


def test_eps_rejects_nan_and_mismatched_batches():
    a = np.ones((2, 4, 4))
    with pytest.raises(InputError, match="NaN"):
        explainability_preservation_score(a, np.full((2, 4, 4), np.nan))
    with pytest.raises(InputError, match="batch"):
        explainability_preservation_score(a, np.ones((3, 4, 4)))


def test_classification_metrics_known_values():
    labels = np.array([1, 1, 0, 0, 1])
    probs = np.array([0.9, 0.4, 0.2, 0.6, 0.8])
    m = classification_metrics(labels, probs)
    assert m.accuracy == pytest.approx(3 / 5)
    assert m.precision == pytest.approx(2 / 3)
    assert m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.auc == pytest.approx(5 / 6)  # 5 of 6 (pos, neg) pairs ranked correctly
    assert math.isnan(roc_auc(np.array([1, 1]), np.array([0.1, 0.2])))


@pytest.mark.parametrize("threshold", [math.nan, math.inf, 50, -0.1, True, "0.5"])
def test_classification_threshold_must_be_a_probability(threshold):
    """NaN or a percentage (50) called every sample real without a word."""
    with pytest.raises(UsageError, match=r"threshold must be a probability in \[0, 1\]"):
        classification_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), threshold=threshold)


@pytest.mark.parametrize("labels, match", [
    (np.array([-1, -1, 1, 1]), r"0 \(real\) or 1 \(fake\), got \[-1\]"),  # gave accuracy 0.25 and AUC NaN
    (np.array([0.1, 0.2, 0.9, 0.8]), r"0 \(real\) or 1"),  # probabilities were truncated to 0
    (np.array(["0", "0", "1", "1"]), r"0 \(real\) or 1"),
    (np.eye(2)[[0, 0, 1, 1]], r"1-D .* got shape \(4, 2\)"),  # one-hot rows were flattened into 8 samples
    (np.array([0, 0, 1]), "equally many labels and scores, got 3 and 4"),  # was an IndexError in roc_auc
])
def test_labels_must_be_one_zero_or_one_per_score(labels, match):
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    with pytest.raises(InputError, match=match):
        classification_metrics(labels, scores)
    with pytest.raises(InputError, match=match):
        roc_auc(labels, scores)


def test_labels_may_be_bool_or_float_zero_one():
    scores = np.array([0.1, 0.4, 0.35, 0.8])
    assert roc_auc(np.array([False, False, True, True]), scores) == 0.75
    assert classification_metrics(np.array([0.0, 0.0, 1.0, 1.0]), scores).auc == 0.75
    with pytest.raises(InputError, match="NaN"):
        roc_auc(np.array([0, 0, 1, 1]), np.array([0.1, np.nan, 0.35, 0.8]))


@pytest.mark.parametrize("fraction", [math.nan, 2.0, 20, -1.0, 0.0, True, "0.2"])
def test_top_fraction_must_be_a_fraction_of_the_map(fraction):
    """NaN failed deep in math.ceil; 2 or 20 (a percentage) selected every entry, -1 and 0 one entry, silently."""
    with pytest.raises(UsageError, match=r"fraction must be a number in \(0, 1\]"):
        top_fraction_mask(np.arange(20.0).reshape(2, 10), fraction)
    assert top_fraction_mask(np.arange(20.0).reshape(2, 10), 1).all()


def test_row_pairs_of_other_shapes_are_refused_naming_both():
    """spearman_rows raised numpy's broadcast error on maps of other sizes."""
    a = np.random.default_rng(0).random((3, 16))
    for f in (spearman_rows, top_fraction_iou):
        with pytest.raises(InputError, match=r"same shape, got \(3, 16\) and \(3, 10\)"):
            f(a, a[:, :10])
        with pytest.raises(InputError, match=r"same shape, got \(16,\) and \(16,\)"):
            f(a[0], a[0])
