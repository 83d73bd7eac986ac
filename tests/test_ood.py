"""OOD scores and detection metrics against hand-computed values, and against scikit-learn as a check."""

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from peftlab.ood import DETECTORS, detection_metrics, detection_rows, fit_mahalanobis, ood_scores


def test_logit_scores_by_hand():
    s = ood_scores(np.array([[2.0, 0.0], [0.0, 0.0]]))
    assert s["msp"] == pytest.approx([math.e**2 / (math.e**2 + 1), 0.5])
    assert s["max_logit"] == pytest.approx([2.0, 0.0])
    assert s["energy"] == pytest.approx([math.log(math.e**2 + 1), math.log(2)])
    assert "mahalanobis" not in s  # no features, no fit
    big = ood_scores(np.array([[1000.0, 0.0]]))  # stable for large logits
    assert big["msp"][0] == pytest.approx(1.0) and big["energy"][0] == pytest.approx(1000.0)


def test_mahalanobis_by_hand():
    # class 0 mean (0, 0), class 1 mean (5, 0); pooled covariance [[1, -.5], [-.5, .5]], precision [[2, 2], [2, 4]]
    features = np.array([[1.0, 0.0], [-1.0, 0.0], [4.0, 1.0], [6.0, -1.0]])
    means, precision = fit_mahalanobis(features, np.array([0, 0, 1, 1]))
    assert means == pytest.approx(np.array([[0.0, 0.0], [5.0, 0.0]]))
    assert precision == pytest.approx(np.array([[2.0, 2.0], [2.0, 4.0]]))
    # (0, 1): distance 4 to class 0, 34 to class 1 -> score -4; a class mean itself scores 0
    s = ood_scores(np.zeros((2, 2)), np.array([[0.0, 1.0], [5.0, 0.0]]), class_means=means, shared_precision=precision)
    assert s["mahalanobis"] == pytest.approx([-4.0, 0.0])


def test_mahalanobis_with_fewer_examples_than_dimensions_and_a_missing_class():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 20))
    means, precision = fit_mahalanobis(x, np.array([0, 0, 0, 2, 2, 2]))  # class 1 has no examples
    assert np.isnan(means[1]).all() and np.isfinite(precision).all()
    s = ood_scores(np.zeros((2, 3)), np.vstack([x[0], x[0] + 100]), class_means=means, shared_precision=precision)
    assert np.isfinite(s["mahalanobis"]).all() and s["mahalanobis"][0] > s["mahalanobis"][1]


def test_detection_metrics_by_hand():
    # descending: .9 in, .8 in, .7 out, .4 in, .3 out
    m = detection_metrics([0.9, 0.8, 0.4], [0.7, 0.3])
    assert m["auroc"] == pytest.approx(5 / 6)  # 5 of 6 (in, out) pairs ordered correctly
    assert m["aupr"] == pytest.approx(1 / 3 + 1 / 3 + 1 / 3 * 3 / 4)  # recall steps times precision
    assert m["fpr95"] == pytest.approx(0.5)  # keeping all 3 in-distribution needs threshold .4: accepts .7
    ties = detection_metrics([1.0, 1.0], [1.0, 0.0])
    assert ties["auroc"] == pytest.approx(0.75)  # two ties count one half each
    assert detection_metrics([2.0, 3.0], [0.0, 1.0]) == {"auroc": 1.0, "aupr": 1.0, "fpr95": 0.0}
    assert detection_metrics([0.0], [1.0])["fpr95"] == 1.0
    with pytest.raises(ValueError):
        detection_metrics([], [1.0])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_metrics_agree_with_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    s_in = np.round(rng.normal(1.0, 1.0, 200), 1)  # rounding makes ties
    s_out = np.round(rng.normal(0.0, 1.0, 150), 1)
    y = np.r_[np.ones(200), np.zeros(150)]
    scores = np.r_[s_in, s_out]
    m = detection_metrics(s_in, s_out)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, scores))
    assert m["aupr"] == pytest.approx(average_precision_score(y, scores))
    fpr, tpr, _ = roc_curve(y, scores, drop_intermediate=False)
    assert m["fpr95"] == pytest.approx(fpr[np.argmax(tpr >= 0.95)])


def test_separated_features_are_detected_and_rows_name_every_detector():
    rng = np.random.default_rng(0)
    train = np.vstack([rng.normal(0, 1, (50, 4)), rng.normal(6, 1, (50, 4))])
    fit = fit_mahalanobis(train, np.r_[np.zeros(50, int), np.ones(50, int)])
    logits_in, logits_out = rng.normal(0, 1, (40, 2)) * [8, 0], rng.normal(0, 0.1, (40, 2))
    s_in = ood_scores(logits_in, rng.normal(0, 1, (40, 4)), class_means=fit[0], shared_precision=fit[1])
    s_out = ood_scores(logits_out, rng.normal(-8, 1, (40, 4)), class_means=fit[0], shared_precision=fit[1])
    rows = detection_rows(s_in, s_out)
    assert [(r["metric"], r["detector"]) for r in rows[:3]] == [("ood_auroc", "msp"), ("ood_aupr", "msp"),
                                                                ("ood_fpr95", "msp")]
    assert {r["detector"] for r in rows} == set(DETECTORS) and len(rows) == 12
    maha = {r["metric"]: r["value"] for r in rows if r["detector"] == "mahalanobis"}
    assert maha == {"ood_auroc": 1.0, "ood_aupr": 1.0, "ood_fpr95": 0.0}
    assert all(r["signature"].startswith("pos:in") and r["n_in"] == 40 for r in rows)
