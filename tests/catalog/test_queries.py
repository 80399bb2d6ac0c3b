"""The three analyst queries of the README, run on the tiny lake through the registered catalog.

The query texts below are the README's, verbatim: a change to a table's schema that breaks them
fails here.
"""

from __future__ import annotations

import pytest

from pipelines import catalog
from tests.catalog.conftest import CURRENT_VARIANCE, EXPECTED_NEIGHBOURS, IMAGES

IMAGES_PER_FRUIT = """
SELECT b.label,
       count(*)                       AS images,
       count_if(b.split = 'Training') AS training,
       count_if(b.split = 'Test')     AS test,
       count(g.image_id)              AS in_gold
FROM fruits.bronze b
LEFT JOIN fruits.gold g ON g.image_id = b.image_id
GROUP BY b.label
ORDER BY images DESC, b.label
"""

NEAREST_NEIGHBOURS = """
WITH target AS (
  SELECT g.image_id, g.pca
  FROM fruits.gold g JOIN fruits.bronze b ON b.image_id = g.image_id
  WHERE b.path = 'Test/Banana/109_100.jpg'
)
SELECT b.path, g.label, g.split,
       sqrt(aggregate(zip_with(g.pca, t.pca, (x, y) -> (x - y) * (x - y)), 0D, (acc, d) -> acc + d)) AS distance
FROM fruits.gold g
CROSS JOIN target t
JOIN fruits.bronze b ON b.image_id = g.image_id
WHERE g.image_id <> t.image_id
ORDER BY distance
LIMIT 5
"""

VARIANCE_BY_COMPONENT = """
SELECT v.component,
       round(v.explained_variance_ratio, 4) AS explained_variance_ratio,
       round(v.cumulative, 4)               AS cumulative,
       v.component <= m.k                   AS kept_in_gold
FROM fruits.gold_variance v
JOIN (SELECT model_version, max(size(pca)) AS k FROM fruits.gold GROUP BY model_version) m
  ON m.model_version = v.model_version
ORDER BY v.component
LIMIT 20
"""

pytestmark = pytest.mark.spark


@pytest.fixture
def registered(spark, tiny_lake):
    catalog.register_tables(spark, tiny_lake)
    return tiny_lake


def test_images_per_fruit_counts_bronze_by_split_and_what_reached_gold(spark, registered):
    rows = [tuple(r) for r in spark.sql(IMAGES_PER_FRUIT).collect()]
    assert rows == [("Apple Braeburn", 3, 2, 1, 3), ("Banana", 2, 1, 1, 2), ("Kiwi", 1, 1, 0, 0)]


def test_nearest_neighbours_are_ordered_by_euclidean_distance_in_pca_space(spark, registered):
    rows = spark.sql(NEAREST_NEIGHBOURS).collect()
    path_of = {image_id: path for image_id, (path, *_) in IMAGES.items()}
    assert [r.path for r in rows] == [path_of[i] for i, _ in EXPECTED_NEIGHBOURS]
    assert [r.distance for r in rows] == pytest.approx([d for _, d in EXPECTED_NEIGHBOURS])
    assert IMAGES["id-banana-test"][0] not in [r.path for r in rows]


def test_variance_by_component_shows_the_current_model_only_and_the_kept_components(spark, registered):
    rows = spark.sql(VARIANCE_BY_COMPONENT).collect()
    assert [r.component for r in rows] == [1, 2, 3, 4]
    assert [float(r.explained_variance_ratio) for r in rows] == pytest.approx(CURRENT_VARIANCE)
    assert float(rows[-1].cumulative) == pytest.approx(1.0)
    assert [r.kept_in_gold for r in rows] == [True, True, True, False]
