"""The analyst queries of the README and of the walkthrough notebook, read out of those files at test
time and run on the tiny lake through the registered catalog.

The tiny lake's gold_variance holds an old model version beside the current one (as a lake does
after a refit, or after a fit whose gate failed), so a variance query that does not keep to gold's
model shows here. A change to a table's schema, or to a query in the README or the notebook, that
breaks them fails here.
"""

from __future__ import annotations

import json
import math
import re

import pytest

from pipelines import catalog
from pipelines.config import PROJECT_ROOT
from tests.catalog.conftest import (
    CURRENT_CLASSIFIER, CURRENT_SCORES, CURRENT_VARIANCE, EXPECTED_NEIGHBOURS, IMAGES, OLD_CLASSIFIER, TARGET_PATH,
)

README = PROJECT_ROOT / "README.md"
NOTEBOOK = PROJECT_ROOT / "notebooks" / "fruits_walkthrough.ipynb"

pytestmark = pytest.mark.spark


def readme_queries() -> list[str]:
    """The `python -m pipelines.sql "..."` statements of the README, in order."""
    return re.findall(r'python -m pipelines\.sql "(.*?)"', README.read_text(encoding="utf-8"), flags=re.S)


def notebook_queries() -> list[str]:
    """The spark.sql('''...''') statements of the notebook's code cells, in order."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return re.findall(r"spark\.sql\(\s*'''(.*?)'''", code, flags=re.S)


def one(queries: list[str], marker: str) -> str:
    found = [q for q in queries if marker in q]
    assert len(found) == 1, f"expected one query containing {marker!r}, found {len(found)} in {queries}"
    return found[0]


@pytest.fixture
def registered(spark, tiny_lake):
    catalog.register_tables(spark, tiny_lake)
    yield tiny_lake
    spark.catalog.setCurrentDatabase("default")  # the notebook's queries name tables without the database


def distance(a, b) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def test_the_readme_and_the_notebook_hold_the_queries_this_file_checks():
    assert len(readme_queries()) == 5
    assert len(notebook_queries()) == 2  # labels per split, nearest neighbours (the variance query is the README's)


def test_readme_images_per_fruit(spark, registered):
    rows = [tuple(r) for r in spark.sql(one(readme_queries(), "FROM fruits.bronze GROUP BY label")).collect()]
    assert rows == [("Apple Braeburn", 3), ("Banana", 2), ("Kiwi", 1)]


def test_readme_variance_by_component_shows_gold_s_model_only(spark, registered):
    rows = spark.sql(one(readme_queries(), "fruits.gold_variance")).collect()
    assert [r.component for r in rows] == [1, 2, 3, 4], "rows of another model than gold's are mixed in"
    assert [r.explained_variance_ratio for r in rows] == pytest.approx(CURRENT_VARIANCE)
    assert rows[-1].cumulative == pytest.approx(1.0)


def test_readme_nearest_neighbours_of_a_banana(spark, registered):
    rows = spark.sql(one(readme_queries(), "zip_with")).collect()
    pca = {image_id: p for image_id, (_, _, _, p) in IMAGES.items() if p is not None}
    # The query takes one Banana of gold (either); it is its own nearest neighbour, at distance 0.
    assert len(rows) == 5 and rows[0].label == "Banana" and rows[0].distance == 0.0
    query = pca[rows[0].image_id]
    want = sorted(distance(p, query) for p in pca.values())
    assert [r.distance for r in rows] == pytest.approx(want)
    assert [r.distance for r in rows] == pytest.approx([distance(pca[r.image_id], query) for r in rows])


def test_readme_classifier_scores_newest_model_first(spark, registered):
    rows = spark.sql(one(readme_queries(), "test_accuracy")).collect()
    assert [(r.model_version, r.test_accuracy, r.test_rows) for r in rows] == [(CURRENT_CLASSIFIER, 0.5, 2), (OLD_CLASSIFIER, 0.1, 2)]


def test_readme_weakest_fruits_are_those_of_the_current_classifier_by_recall(spark, registered):
    rows = spark.sql(one(readme_queries(), "explode(classes)")).collect()
    assert [(r.label, r.recall, r.precision) for r in rows] == [
        (label, recall, precision) for label, (precision, recall) in sorted(CURRENT_SCORES.items(), key=lambda item: item[1][1])
    ]


def test_notebook_images_per_fruit_counts_bronze_by_split_and_what_reached_gold(spark, registered):
    spark.catalog.setCurrentDatabase(registered["catalog.database"])
    rows = [tuple(r) for r in spark.sql(one(notebook_queries(), "count_if")).collect()]
    assert rows == [("Apple Braeburn", 3, 2, 1, 3), ("Banana", 2, 1, 1, 2), ("Kiwi", 1, 1, 0, 0)]


def test_notebook_nearest_neighbours_are_ordered_by_euclidean_distance_in_pca_space(spark, registered):
    spark.catalog.setCurrentDatabase(registered["catalog.database"])
    rows = spark.sql(one(notebook_queries(), "zip_with"), args={"target_path": TARGET_PATH}).collect()
    path_of = {image_id: path for image_id, (path, *_) in IMAGES.items()}
    assert [r.path for r in rows] == [path_of[i] for i, _ in EXPECTED_NEIGHBOURS]
    assert [r.distance for r in rows] == pytest.approx([d for _, d in EXPECTED_NEIGHBOURS])
    assert TARGET_PATH not in [r.path for r in rows]
