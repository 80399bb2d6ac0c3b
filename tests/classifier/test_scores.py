"""The classifier's evaluation (pipelines/scores.py) and its gate's facts, checked by hand."""

from __future__ import annotations

import pytest

from pipelines import scores


def test_accuracy_per_class_scores_and_macro_f1_follow_the_textbook_definitions():
    # 10 Test images: Apple 4 (3 right, 1 as Kiwi), Kiwi 4 (all right), Lemon 2 (1 right, 1 as Kiwi)
    evaluation = scores.evaluate([("Apple", "Apple", 3), ("Apple", "Kiwi", 1), ("Kiwi", "Kiwi", 4), ("Lemon", "Lemon", 1), ("Lemon", "Kiwi", 1)])
    assert evaluation.test_rows == 10 and evaluation.accuracy == pytest.approx(0.8)
    by_label = {c.label: c for c in evaluation.classes}
    assert (by_label["Apple"].precision, by_label["Apple"].recall, by_label["Apple"].support) == (1.0, 0.75, 4)
    assert by_label["Kiwi"].precision == pytest.approx(4 / 6) and by_label["Kiwi"].recall == 1.0
    assert by_label["Lemon"].f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    f1s = [2 * 0.75 / 1.75, 2 * (4 / 6) / (4 / 6 + 1), 2 * 0.5 / 1.5]
    assert evaluation.macro_f1 == pytest.approx(sum(f1s) / 3)


def test_a_label_only_predicted_scores_zero_and_no_test_rows_give_no_accuracy():
    evaluation = scores.evaluate([("Apple", "Pear", 2), ("Apple", "Apple", 0)])
    assert evaluation.accuracy == 0.0 and {c.label: c.f1 for c in evaluation.classes} == {"Apple": 0.0, "Pear": 0.0}
    assert evaluation.confusion == (("Apple", "Pear", 2),)  # zero counts are dropped
    empty = scores.evaluate([])
    assert (empty.test_rows, empty.accuracy, empty.macro_f1) == (0, None, None)


def test_the_best_candidate_is_the_most_accurate_then_the_most_regularised():
    assert scores.best_candidate([(0.0, 0.90), (0.01, 0.95), (0.1, 0.93)]) == 0.01
    assert scores.best_candidate([(0.0, 0.95), (0.01, 0.95), (0.1, 0.90)]) == 0.01
    assert scores.best_candidate([(0.001, None), (0.1, None)]) == 0.001  # nothing held out: the first


def test_the_confusion_plot_draws_the_labels_of_lowest_recall_when_there_are_too_many():
    counts = [(f"L{i:02d}", f"L{i:02d}", 10 - (i % 5)) for i in range(30)] + [(f"L{i:02d}", "L00", i % 5) for i in range(1, 30)]
    evaluation = scores.evaluate(counts)
    figure = scores.confusion_figure(evaluation, "v1", max_labels=8)
    axes = figure.axes[0]
    shown = [tick.get_text() for tick in axes.get_yticklabels()]
    worst = sorted((c.recall, c.label) for c in evaluation.classes)[:8]
    assert shown == sorted(label for _, label in worst)
    assert [tick.get_text() for tick in axes.get_xticklabels()][-1] == "other"
    rows = axes.images[0].get_array()
    assert rows.shape == (8, 9) and all(abs(row.sum() - 1.0) < 1e-9 for row in rows)
