"""The classifier's evaluation, as pure functions: from confusion counts to the metrics QA reads.

Spark counts the Test rows per (true label, predicted label), a table of at most labels^2 rows;
everything else (accuracy, per-class precision, recall and F1, macro-F1, the confusion-matrix plot)
is computed here on the driver from those counts, so the same code is what the classifier stage
records and what its tests check by hand.

Conventions (scikit-learn's, so the numbers can be checked against any textbook tool):
- accuracy = correct / all Test rows (a Test row whose label the model never saw counts as wrong);
- per class: precision = TP / predicted as the class, recall = TP / rows of the class, F1 their
  harmonic mean; a ratio with a zero denominator is 0;
- macro-F1 = the mean of F1 over every label that is a true label of the Test rows or one the model
  predicts (a class predicted but absent from Test scores 0, as scikit-learn's labels=union does).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure


@dataclass(frozen=True)
class ClassScores:
    label: str
    precision: float
    recall: float
    f1: float
    support: int  # Test rows of this true label


@dataclass(frozen=True)
class Evaluation:
    test_rows: int
    accuracy: float | None  # None without Test rows
    macro_f1: float | None
    classes: tuple[ClassScores, ...]
    confusion: tuple[tuple[str, str, int], ...]  # (true label, predicted label, rows), non-zero only


def evaluate(counts: Iterable[tuple[str, str, int]]) -> Evaluation:
    """Scores from (true label, predicted label, rows) counts of the Test rows."""
    confusion = tuple(sorted((truth, predicted, int(n)) for truth, predicted, n in counts if n))
    total = sum(n for _, _, n in confusion)
    if total == 0:
        return Evaluation(0, None, None, (), ())
    correct = sum(n for truth, predicted, n in confusion if truth == predicted)
    labels = sorted({truth for truth, _, _ in confusion} | {predicted for _, predicted, _ in confusion})
    classes = []
    for label in labels:
        hits = sum(n for truth, predicted, n in confusion if truth == label and predicted == label)
        support = sum(n for truth, _, n in confusion if truth == label)
        predicted_as = sum(n for _, predicted, n in confusion if predicted == label)
        precision = hits / predicted_as if predicted_as else 0.0
        recall = hits / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        classes.append(ClassScores(label, precision, recall, f1, support))
    return Evaluation(total, correct / total, float(np.mean([c.f1 for c in classes])), tuple(classes), confusion)


def best_candidate(accuracies: Sequence[tuple[float, float | None]]) -> float:
    """The regularisation to train with, from (reg_param, validation accuracy) pairs: the highest
    accuracy, and among equals the strongest regularisation (the simpler model). Without any
    validation accuracy (too few Training rows to hold some out), the first candidate."""
    scored = [(accuracy, reg) for reg, accuracy in accuracies if accuracy is not None]
    if not scored:
        return accuracies[0][0]
    return max(scored)[1]


def confusion_figure(evaluation: Evaluation, model_version: str, max_labels: int) -> Figure:
    """The Test confusion matrix, each row divided by its support (a perfect model is a diagonal).

    With more true labels than `max_labels`, only the labels with the lowest recall are drawn (the
    ones QA must look at), each row still over every predicted label drawn plus 'other'.
    """
    recall = {c.label: c.recall for c in evaluation.classes if c.support}
    shown = sorted(sorted(recall, key=lambda label: (recall[label], label))[:max_labels])
    columns = shown + (["other"] if len(shown) < len(evaluation.classes) else [])
    index = {label: i for i, label in enumerate(columns)}
    matrix = np.zeros((len(shown), len(columns)))
    for truth, predicted, n in evaluation.confusion:
        if truth in recall and truth in shown:
            matrix[shown.index(truth), index.get(predicted, len(columns) - 1)] += n
    supports = matrix.sum(axis=1, keepdims=True)
    matrix = np.divide(matrix, supports, out=np.zeros_like(matrix), where=supports > 0)
    size = max(6.0, 0.16 * len(columns) + 3)
    figure = Figure(figsize=(size, max(5.0, 0.16 * len(shown) + 3)))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    font = 7 if len(columns) <= 40 else 4
    axes.set_xticks(range(len(columns)), columns, rotation=90, fontsize=font)
    axes.set_yticks(range(len(shown)), shown, fontsize=font)
    subset = "" if len(shown) == len(recall) else f", the {len(shown)} labels of lowest recall"
    axes.set(
        xlabel="predicted label", ylabel="true label",
        title=f"Classifier on Test: accuracy {evaluation.accuracy:.4f}, macro-F1 {evaluation.macro_f1:.4f}{subset}\n"
        f"model {model_version} ({evaluation.test_rows} Test images; each row sums to 1)",
    )
    figure.colorbar(image, ax=axes, fraction=0.03, label="share of the true label's images")
    figure.tight_layout()
    return figure
