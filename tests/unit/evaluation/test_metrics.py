"""Metrics against hand-computed values on tiny cases (ties, one class only, streaming)."""

import numpy as np
import pytest
import torch

from bundle.evaluation.metrics import (
    DiceAccumulator,
    PixelAUROC,
    best_f1,
    dice,
    image_ap,
    image_auroc,
    nan_to_none,
    pixel_auroc,
    pr_curve,
    roc_curve,
)

SCORES = [0.1, 0.4, 0.35, 0.8]
LABELS = [0, 0, 1, 1]


def test_auroc_and_ap_by_hand():
    # pairs (pos, neg): 0.35>0.1, 0.35<0.4, 0.8>0.1, 0.8>0.4 -> 3 of 4
    assert image_auroc(SCORES, LABELS) == pytest.approx(0.75)
    # ranked: 0.8 (+) R=.5 P=1 ; 0.4 (-) ; 0.35 (+) R=1 P=2/3
    assert image_ap(SCORES, LABELS) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert image_auroc(torch.tensor(SCORES), torch.tensor(LABELS)) == pytest.approx(0.75)


def test_perfect_and_inverted():
    assert image_auroc([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    assert image_auroc([3, 2, 1, 0], [0, 0, 1, 1]) == 0.0
    assert image_ap([0, 1, 2, 3], [0, 0, 1, 1]) == 1.0
    # inverted: + at ranks 3 and 4 of 4: P=1/3 at R=.5, P=2/4 at R=1
    assert image_ap([3, 2, 1, 0], [0, 0, 1, 1]) == pytest.approx(0.5 / 3 + 0.5 / 2)


@pytest.mark.parametrize("perm", [[0, 1, 2, 3], [3, 2, 1, 0], [1, 3, 0, 2], [2, 0, 3, 1]])
def test_ties_are_order_independent(perm):
    scores = np.array([0.5, 0.5, 0.5, 0.9])[perm]
    labels = np.array([0, 1, 0, 1])[perm]
    # 0.9 beats both negatives (2), the tied positive counts 1/2 against each negative (1) -> 3/4
    assert image_auroc(scores, labels) == pytest.approx(0.75)
    # level 0.9: R=.5 P=1 ; level 0.5 (2 pos, 2 neg together): R=1 P=.5
    assert image_ap(scores, labels) == pytest.approx(0.75)


def test_all_tied_is_chance():
    assert image_auroc([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)
    assert image_ap([1, 1, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.5)


@pytest.mark.parametrize("labels", [[1, 1, 1], [0, 0, 0]])
def test_one_class_gives_none(labels):
    assert image_auroc([0.1, 0.2, 0.3], labels) is None
    assert image_ap([0.1, 0.2, 0.3], labels) is None
    assert roc_curve([0.1, 0.2, 0.3], labels) is None
    assert pr_curve([0.1, 0.2, 0.3], labels) is None


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="differ in length"):
        image_auroc([0.1, 0.2], [0, 1, 1])
    with pytest.raises(ValueError, match="0 \\(healthy\\) or 1"):
        image_auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="NaN"):
        image_ap([0.1, float("nan")], [0, 1])


def test_curves():
    roc = roc_curve(SCORES, LABELS)
    np.testing.assert_allclose(roc["fpr"], [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(roc["tpr"], [0, 0.5, 0.5, 1, 1])
    assert roc["thresholds"][0] == np.inf
    pr = pr_curve(SCORES, LABELS)
    np.testing.assert_allclose(pr["precision"], [1, 0.5, 2 / 3, 0.5])
    np.testing.assert_allclose(pr["recall"], [0.5, 0.5, 1, 1])
    np.testing.assert_allclose(pr["thresholds"], [0.8, 0.4, 0.35, 0.1])


def test_best_f1_by_hand():
    # t=.8: F1 2/3 ; t=.4: 1/2 ; t=.35: 4/5 ; t=.1: 2/3
    point = best_f1(SCORES, LABELS)
    assert point["threshold"] == pytest.approx(0.35)
    assert point["f1"] == pytest.approx(0.8)
    assert point["precision"] == pytest.approx(2 / 3)
    assert point["recall"] == 1.0
    assert point["specificity"] == 0.5
    assert best_f1([0.1, 0.2], [0, 0]) is None
    assert best_f1([0.1, 0.2], [1, 1])["specificity"] is None


def test_matches_brute_force_on_random_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200) / 5.0  # many ties
    labels = rng.integers(0, 2, 200)
    pos, neg = scores[labels == 1], scores[labels == 0]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert image_auroc(scores, labels) == pytest.approx(pairs / (pos.size * neg.size))
    # AP by definition: for each distinct threshold, precision times the recall gained there
    ap, prev_recall = 0.0, 0.0
    for t in sorted(set(scores), reverse=True):
        predicted = scores >= t
        tp = (predicted & (labels == 1)).sum()
        recall = tp / pos.size
        ap += (recall - prev_recall) * tp / predicted.sum()
        prev_recall = recall
    assert image_ap(scores, labels) == pytest.approx(ap)


def test_dice_by_hand():
    pred = np.array([[1, 1, 0], [0, 0, 0]])
    gt = np.array([[1, 0, 0], [1, 0, 0]])
    assert dice(pred, gt) == pytest.approx(0.5)
    assert dice(np.zeros(4), np.zeros(4)) == 1.0
    assert dice(np.zeros(4), np.zeros(4), empty_value=0.0) == 0.0
    assert dice(np.ones(4), np.zeros(4)) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        dice(np.ones(4), np.ones(5))


def test_dice_accumulator_mean_and_pooled():
    acc = DiceAccumulator()
    assert acc.mean is None and acc.pooled is None
    # image 1: |P|=2 |G|=2 inter 1 -> .5 ; image 2: |P|=4 |G|=4 inter 4 -> 1
    acc.update(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    acc.update(np.ones(4), np.ones(4))
    assert acc.mean == pytest.approx(0.75)
    assert acc.pooled == pytest.approx(2 * 5 / (6 + 6))


def test_pixel_auroc_exact_by_hand():
    errors = [np.array([[0.0, 0.1], [0.2, 0.3]]), np.array([[0.3, 0.05]])]
    masks = [np.array([[0, 0], [1, 1]]), np.array([[0, 1]])]
    # pos {0.2, 0.3, 0.05}, neg {0, 0.1, 0.3}: 0.2 beats 2, 0.3 beats 2 + ties 1 (.5), 0.05 beats 1 -> 5.5/9
    assert pixel_auroc(errors, masks, num_bins=None) == pytest.approx(5.5 / 9)
    assert pixel_auroc(errors, masks) == pytest.approx(5.5 / 9, abs=1e-9)
    assert pixel_auroc(np.ones((4, 4)), np.zeros((4, 4))) is None


def test_pixel_auroc_streaming_matches_exact():
    rng = np.random.default_rng(1)
    acc, exact = PixelAUROC(), PixelAUROC(num_bins=None)
    for _ in range(5):
        mask = rng.random((32, 32)) < 0.2
        err = (rng.random((32, 32)) * 0.3 + 0.2 * mask) ** 2
        acc.update(torch.from_numpy(err), mask)
        exact.update(err, mask)
    assert acc.compute() == pytest.approx(exact.compute(), abs=1e-3)
    assert acc.pos.sum() + acc.neg.sum() == 5 * 32 * 32


def test_nan_to_none():
    assert nan_to_none(float("nan")) is None and nan_to_none(None) is None and nan_to_none(0.5) == 0.5


def test_image_scores_accumulator_matches_the_functions_and_needs_both_classes():
    from bundle.evaluation.metrics import ImageScores, best_f1, image_ap, image_auroc

    acc = ImageScores()
    for score, label in [(0.1, 0), (0.4, 0)]:
        acc.update(score, label)
    assert not acc.both_classes and acc.auroc() is None and acc.ap() is None and acc.best_f1() is None
    for score, label in [(0.35, 1), (0.9, 1)]:
        acc.update(score, label)
    scores, labels = [0.1, 0.4, 0.35, 0.9], [0, 0, 1, 1]
    assert acc.auroc() == pytest.approx(image_auroc(scores, labels)) == pytest.approx(0.75)
    assert acc.ap() == pytest.approx(image_ap(scores, labels))
    assert acc.best_f1() == best_f1(scores, labels)
