"""Metadata scrubbing and image checks (pure functions, no Spark)."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from pipelines.images import EXIF_ORIENTATION_TAG, ScrubError, inspect_image, scrub_jpeg, scrub_png, sha256_hex
from tests.conftest import jpeg_bytes, png_bytes

GPS_IFD = 0x8825
BIG = 10**8


def jpeg_with_personal_metadata(progressive: bool = False) -> bytes:
    image = Image.new("RGB", (64, 48))
    image.putdata([(x * 3 % 256, y * 5 % 256, (x + y) % 256) for y in range(48) for x in range(64)])
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    exif[0x013B] = "Jane Doe"  # Artist
    gps = exif.get_ifd(GPS_IFD)
    gps.update({1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), comment=b"shot by Jane Doe", progressive=progressive, quality=90)
    data = out.getvalue()
    # An XMP packet in a second APP1 segment, and an IPTC-like APP13 segment, right after SOI.
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>Jane Doe GPS 48.85</x:xmpmeta>"
    app13 = b"Photoshop 3.0\x00Jane Doe"
    segment = lambda marker, payload: bytes((0xFF, marker)) + (len(payload) + 2).to_bytes(2, "big") + payload
    return data[:2] + segment(0xE1, xmp) + segment(0xED, app13) + data[2:] + b"trailing data after EOI: Jane"


def pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("progressive", [False, True])
def test_gps_and_personal_metadata_removed_pixels_identical(progressive):
    original = jpeg_with_personal_metadata(progressive)
    assert b"Jane Doe" in original and Image.open(io.BytesIO(original)).getexif().get_ifd(GPS_IFD)

    result = inspect_image(original, BIG)

    assert result.reason is None
    assert b"Jane" not in result.content and b"xmpmeta" not in result.content
    with Image.open(io.BytesIO(result.content)) as scrubbed:
        assert not scrubbed.getexif().get_ifd(GPS_IFD)
        assert len(scrubbed.getexif()) == 0
        assert "comment" not in scrubbed.info
    assert np.array_equal(pixels(original), pixels(result.content))
    assert result.orientation == 6  # kept as a column since the EXIF block is gone
    assert (result.image_format, result.width, result.height) == ("JPEG", 64, 48)


def test_jpeg_keeps_jfif_icc_and_adobe_segments():
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (1, 2, 3)).save(out, "JPEG", icc_profile=icc)
    cmyk = io.BytesIO()
    Image.new("CMYK", (16, 16), (0, 50, 100, 20)).save(cmyk, "JPEG")

    assert Image.open(io.BytesIO(scrub_jpeg(out.getvalue()))).info.get("icc_profile") == icc
    assert np.array_equal(pixels(cmyk.getvalue()), pixels(scrub_jpeg(cmyk.getvalue())))
    assert b"Adobe" in scrub_jpeg(cmyk.getvalue())


def test_png_text_chunks_removed_pixels_identical():
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Author", "Jane Doe")
    info.add_itxt("Location", "48.85 N 2.35 E")
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 3
    original = png_bytes(pnginfo=info, exif=exif.tobytes())
    assert b"Jane Doe" in original

    result = inspect_image(original, BIG)

    assert result.reason is None and result.image_format == "PNG"
    assert b"Jane" not in result.content and b"eXIf" not in result.content
    assert result.orientation == 3
    with Image.open(io.BytesIO(original)) as a, Image.open(io.BytesIO(result.content)) as b:
        assert np.array_equal(np.asarray(a), np.asarray(b)) and b.mode == "RGBA"


@pytest.mark.parametrize(
    "data, code",
    [
        (b"", "empty_file"),
        (os.urandom(2048), "not_an_image"),
        (jpeg_bytes(size=(300, 200))[:1500], "malformed_jpeg"),
        (png_bytes()[:-30], "malformed_png"),
        (b"name,price\napple,1\n", "not_an_image"),
    ],
    ids=["empty", "random", "truncated-jpeg", "truncated-png", "csv-text"],
)
def test_bad_files_get_a_reason(data, code):
    result = inspect_image(data, BIG)
    assert result.content is None
    assert result.reason.split(":")[0] == code


def test_unsupported_format_is_named():
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, "GIF")
    assert inspect_image(out.getvalue(), BIG).reason.startswith("unsupported_format: GIF")


@pytest.mark.parametrize("side, expected", [(100_000, "too_many_pixels: Image size"), (8_000, "too_many_pixels: 8000x8000")])
def test_decompression_bomb_rejected_from_the_header(side, expected):
    """A PNG declaring side x side pixels is refused before any pixel is decoded."""
    small = png_bytes(size=(1, 1), mode="L", color=0)
    ihdr_at = small.index(b"IHDR")
    import struct
    import zlib

    header = struct.pack(">II", side, side) + small[ihdr_at + 12 : ihdr_at + 17]
    chunk = b"IHDR" + header
    bomb = small[: ihdr_at - 4] + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)) + small[ihdr_at + 21 :]

    result = inspect_image(bomb, 50_000_000)

    assert result.reason.startswith(expected)


def test_scrub_errors_name_the_problem():
    with pytest.raises(ScrubError, match="SOI"):
        scrub_jpeg(b"not a jpeg")
    with pytest.raises(ScrubError, match="no EOI"):
        scrub_jpeg(jpeg_bytes()[:-2])
    with pytest.raises(ScrubError, match="signature"):
        scrub_png(b"\x89PNX")


def test_image_id_is_sha256_of_stored_bytes():
    result = inspect_image(jpeg_with_personal_metadata(), BIG)
    assert sha256_hex(result.content) == __import__("hashlib").sha256(result.content).hexdigest()
    assert sha256_hex(result.content) != sha256_hex(jpeg_with_personal_metadata())


def test_real_sample_jpeg_is_unchanged_in_pixels(sample):
    path = next((sample / "Training" / "Banana").glob("*.jpg"))
    data = path.read_bytes()
    result = inspect_image(data, BIG)
    assert result.reason is None
    assert np.array_equal(pixels(data), pixels(result.content))
