"""Label/split parsing from paths (pure)."""

import pytest

from pipelines.bronze import has_image_extension, parse_label_split

SPLITS = ["Training", "Test"]


@pytest.mark.parametrize(
    "path, expected",
    [
        ("Training/Apple Braeburn/r_100_100.jpg", ("Apple Braeburn", "Training")),
        ("Test/Pear Monster/3_100.jpg", ("Pear Monster", "Test")),
        ("Kiwi/a.png", ("Kiwi", None)),
        ("new/2026/Training/Mango Red/x.jpg", ("Mango Red", "Training")),
        ("Training/orphan.jpg", (None, "Training")),
        ("orphan.jpg", (None, None)),
        ("Tést/Pêche plate/été 1.jpg", ("Pêche plate", None)),
    ],
)
def test_parse_label_split(path, expected):
    assert parse_label_split(path, SPLITS) == expected


@pytest.mark.parametrize(
    "name, ok",
    [("a.jpg", True), ("a.JPEG", True), ("b.Png", True), ("c.gif", False), ("README", False), ("x.jpg.txt", False)],
)
def test_has_image_extension(name, ok):
    assert has_image_extension(f"Label/{name}", ["jpg", "jpeg", "png"]) is ok
