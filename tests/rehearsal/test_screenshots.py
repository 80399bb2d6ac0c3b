"""The pages the demo's screenshots are taken of: the bucket listing rendered from ListObjectsV2
and the transcript's terminal frames (pure; the capture itself runs in the long demo test)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from rehearsal import screenshots


def test_folder_counts_group_keys_by_their_first_parts():
    keys = ["input/Training/Kiwi/a.jpg", "input/Training/Kiwi/b.jpg", "input/Test/Kiwi/c.jpg", "input/x.csv"]
    assert screenshots.folder_counts(keys, 3) == [("input", 1), ("input/Test/Kiwi", 1), ("input/Training/Kiwi", 2)]


def test_the_listing_escapes_names_and_highlights_the_new_objects():
    when = datetime(2026, 12, 2, 15, 0, 1, tzinfo=timezone.utc)
    objects = [
        {"Key": "input/Test/Kiwi/a<b>&c.jpg", "Size": 4096, "LastModified": when},
        {"Key": "input/Training/Kiwi/old.jpg", "Size": 2048, "LastModified": when},
    ]
    page = screenshots.listing_page("s3://b/input/", "2 images", [("input/Test/Kiwi", 1)], objects, {objects[0]["Key"]})
    assert "a&lt;b&gt;&amp;c.jpg" in page and "<b>" not in page
    assert page.count('class="new"') == 1 and "4.0 KB" in page and "2026-12-02 15:00:01" in page
    assert "<img" not in page  # names only, never a photo


def live_lines():
    texts = ["demo: setting up", "demo: live part, run demo-1", "demo [1/3] 4 new photos arrive", "  + Test/Kiwi/a.jpg",
             "demo [1/3] done in 0.5 s", "demo [2/3] the chain", "  [cluster] run: done", "demo [2/3] done in 80.0 s",
             "demo [3/3] Spark SQL", "  -- rows each layer gained in this run", "  | bronze | 4 |",
             "  -- the new photos: label, predicted fruit, PCA head", "  | Kiwi | Kiwi |", "demo [3/3] done in 9.0 s",
             "demo: 90 s for the live part: fits the 120 s slot (step 1 0 s, step 2 80 s, step 3 9 s)"]
    return [(float(i), text) for i, text in enumerate(texts)]


def test_frames_cut_the_live_part_in_four():
    cut = screenshots.frames(live_lines())
    assert [frame[0][1] for frame in cut] == [
        "demo: live part, run demo-1", "demo [2/3] the chain", "demo [3/3] Spark SQL", "  -- the new photos: label, predicted fruit, PCA head",
    ]
    assert cut[3][-1][1].startswith("demo: 90 s for the live part: fits")
    assert sum(len(frame) for frame in cut) == len(live_lines()) - 1  # the setup line is not live
    with pytest.raises(ValueError, match="demo \\[3/3\\]"):
        screenshots.frames(live_lines()[:8])


def test_a_terminal_frame_shows_times_since_the_live_part_began():
    page = screenshots.terminal_page("make demo - 1/4", [(10.0, "demo [1/3] <new>"), (12.5, "demo: 90 s for the live part: fits the 120 s slot")], since=10.0)
    assert "   0.0 s" in page and "   2.5 s" in page and "&lt;new&gt;" in page and 'class="ok"' in page
