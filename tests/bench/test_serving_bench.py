"""bench.serving's pure parts: the percentiles it reports and the upload it sends."""

from __future__ import annotations

import asyncio

from starlette.datastructures import Headers
from starlette.formparsers import MultiPartParser

from bench.serving import multipart, percentiles


def test_percentiles_are_nearest_rank_in_milliseconds():
    figures = percentiles([0.001 * n for n in range(100, 0, -1)])  # 1..100 ms, unordered
    assert figures == {"p50_ms": 50.5, "p95_ms": 95.0, "count": 100}
    assert percentiles([0.02])["p95_ms"] == 20.0


def test_the_upload_is_multipart_with_the_photo_in_field_file(tmp_path):
    photo = tmp_path / "kiwi 1.jpg"
    photo.write_bytes(b"\xff\xd8 photo bytes \r\n--not-a-boundary \xff\xd9")
    body, content_type = multipart(photo)

    async def parse():
        async def stream():
            yield body

        form = await MultiPartParser(Headers({"content-type": content_type}), stream()).parse()
        return form["file"].filename, await form["file"].read()

    assert asyncio.run(parse()) == ("kiwi 1.jpg", photo.read_bytes())
