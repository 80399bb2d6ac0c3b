"""The bad-input corpus: files that break naive image pipelines, each with the outcome the lake owes it.

Every file is made here, from bytes or with Pillow, plus a few real Fruits-360 images: nothing is
checked into the repository. `expected` is what the whole chain must do with the file:

- FEATURIZED: bronze accepts it and silver gives it a feature vector (odd but valid images:
  alpha, grey, CMYK, 16-bit grey, 1x1, EXIF-rotated, names with spaces, non-ASCII, '%', '#', '[]');
- IGNORED: not an image by its extension (bronze counts it as ignored and stores nothing);
- a bronze quarantine reason code (the part of the reason before ':', pipelines/images.py):
  the file ends in the shared quarantine table with stage 'bronze'.

The EXIF trio shares one photo: `exif_rot6.jpg` stores the pixels turned a quarter turn
counter-clockwise with EXIF orientation 6 ("rotate 90 degrees clockwise to display"),
`exif_rot6_upright.png` holds exactly those decoded pixels turned upright, and
`exif_rot6_as_stored.png` the decoded pixels as stored. PNG is lossless, so silver must give the
JPEG the features of the upright PNG (it applies the bronze `orientation` column) and not those of
the stored one.
"""

from __future__ import annotations

import io
import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipelines.images import EXIF_ORIENTATION_TAG

FEATURIZED = "featurized"
IGNORED = "ignored"
SPLIT = "Training"
# Label folder of the crafted files.
ODD_LABEL = "Odd Inputs"
# Label folder of real images whose names have spaces, non-ASCII and URI/glob-special characters.
NAMES_LABEL = "Fruit é ü 日本"

EXIF_ROTATED = f"{SPLIT}/{ODD_LABEL}/exif_rot6.jpg"
EXIF_UPRIGHT = f"{SPLIT}/{ODD_LABEL}/exif_rot6_upright.png"
EXIF_AS_STORED = f"{SPLIT}/{ODD_LABEL}/exif_rot6_as_stored.png"
# Declared sizes of the two kinds of decompression bomb (see bomb_png).
PILLOW_BOMB_SIDE = 30_000  # 9e8 pixels: over twice Pillow's MAX_IMAGE_PIXELS, Pillow refuses to open it
BRONZE_BOMB_SIDE = 8_000  # 6.4e7 pixels: Pillow opens it, bronze.max_image_pixels (5e7) refuses it
REAL_IMAGES = 7  # real sample images the corpus needs (4 as they are, 3 renamed)


@dataclass(frozen=True)
class CorpusFile:
    path: str  # relative to the input root, '/'-separated
    content: bytes
    expected: str  # FEATURIZED, IGNORED, or a bronze quarantine reason code
    why: str

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def build_corpus(real_images: list[Path]) -> list[CorpusFile]:
    """The corpus, from REAL_IMAGES distinct real JPEGs (each file's bytes are distinct from the others)."""
    if len(real_images) < REAL_IMAGES:
        raise ValueError(f"the corpus needs {REAL_IMAGES} real images, got {len(real_images)}")
    real = [p.read_bytes() for p in real_images[:REAL_IMAGES]]
    odd = f"{SPLIT}/{ODD_LABEL}"
    names = f"{SPLIT}/{NAMES_LABEL}"
    exif_jpeg, upright_png, as_stored_png = exif_rotated_trio(real[0])
    files = [
        CorpusFile(f"{odd}/empty.jpg", b"", "empty_file", "0 bytes"),
        CorpusFile(f"{odd}/truncated.jpg", real[1][: len(real[1]) * 6 // 10], "malformed_jpeg", "cut at 60%, no EOI"),
        CorpusFile(f"{odd}/random.jpg", random.Random(360).randbytes(4096), "not_an_image", "random bytes"),
        CorpusFile(f"{odd}/report.jpg", pdf_bytes(), "not_an_image", "a PDF named .jpg"),
        CorpusFile(f"{odd}/animation.png", gif_bytes(), "unsupported_format", "a GIF named .png"),
        CorpusFile(f"{odd}/bomb_pillow.png", bomb_png(PILLOW_BOMB_SIDE), "too_many_pixels", "PNG header declares 9e8 pixels"),
        CorpusFile(f"{odd}/bomb_bronze.png", bomb_png(BRONZE_BOMB_SIDE), "too_many_pixels", "PNG header declares 6.4e7 pixels"),
        CorpusFile(f"{odd}/bomb.jpg", jpeg_declaring(real[2], 50_000, 50_000), "too_many_pixels", "JPEG SOF declares 2.5e9 pixels"),
        CorpusFile(f"{odd}/alpha.png", alpha_png(), FEATURIZED, "RGBA with transparent pixels"),
        CorpusFile(f"{odd}/grey.jpg", grey_jpeg(), FEATURIZED, "8-bit greyscale JPEG"),
        CorpusFile(f"{odd}/cmyk.jpg", cmyk_jpeg(), FEATURIZED, "CMYK JPEG"),
        CorpusFile(f"{odd}/grey16.png", grey16_png(), FEATURIZED, "16-bit greyscale PNG (mode I;16)"),
        CorpusFile(f"{odd}/one_pixel.png", one_pixel_png(), FEATURIZED, "1x1 image"),
        CorpusFile(EXIF_ROTATED, exif_jpeg, FEATURIZED, "EXIF orientation 6"),
        CorpusFile(EXIF_UPRIGHT, upright_png, FEATURIZED, "the EXIF photo's pixels turned upright"),
        CorpusFile(EXIF_AS_STORED, as_stored_png, FEATURIZED, "the EXIF photo's pixels as stored"),
        CorpusFile(f"{odd}/notes.txt", b"a text file among the images\n", IGNORED, "not an image extension"),
        CorpusFile(f"{odd}/manual.pdf", pdf_bytes(), IGNORED, "not an image extension"),
        CorpusFile(f"{names}/photo 日本 é ü.jpg", real[3], FEATURIZED, "spaces and non-ASCII"),
        CorpusFile(f"{names}/100% natural #1.jpg", real[4], FEATURIZED, "'%' and '#' (URI-special)"),
        CorpusFile(f"{names}/crate [2] {{b}}.jpg", real[5], FEATURIZED, "'[]{}' (glob-special)"),
    ]
    files += [
        CorpusFile(f"{SPLIT}/{p.parent.name}/{p.name}", data, FEATURIZED, "real sample image")
        for p, data in zip(real_images[6:REAL_IMAGES], real[6:])
    ]
    return files


def write_corpus(root: Path, files: list[CorpusFile]) -> None:
    for file in files:
        target = root / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.content)


def image_files(files: list[CorpusFile]) -> list[CorpusFile]:
    return [f for f in files if f.expected != IGNORED]


# ---------------------------------------------------------------- makers


def _save(image: Image.Image, fmt: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _gradient(size: tuple[int, int]) -> np.ndarray:
    """An RGB gradient (distinct pixels, so features are not those of a flat image)."""
    x = np.linspace(0, 255, size[0], dtype=np.float64)[None, :]
    y = np.linspace(0, 255, size[1], dtype=np.float64)[:, None]
    return np.stack([x + 0 * y, y + 0 * x, (x + y) / 2], axis=-1).astype(np.uint8)


def alpha_png() -> bytes:
    rgba = np.dstack([_gradient((48, 40)), np.full((40, 48), 255, np.uint8)])
    rgba[:, :16, 3] = 0  # a transparent band whose hidden colour must not show
    rgba[:, 16:32, 3] = 128
    return _save(Image.fromarray(rgba, mode="RGBA"), "PNG")


def grey_jpeg() -> bytes:
    return _save(Image.fromarray(_gradient((60, 50))[:, :, 0], mode="L"), "JPEG", quality=90)


def cmyk_jpeg() -> bytes:
    return _save(Image.fromarray(_gradient((60, 50)), mode="RGB").convert("CMYK"), "JPEG", quality=90)


def grey16_png() -> bytes:
    """16-bit grey with values over the whole 0..65535 range (Pillow opens it as I;16)."""
    levels = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype("<u2")
    return _save(Image.fromarray(levels, mode="I;16"), "PNG")


def one_pixel_png() -> bytes:
    return _save(Image.new("RGB", (1, 1), (200, 40, 40)), "PNG")


def gif_bytes() -> bytes:
    return _save(Image.fromarray(_gradient((20, 20)), mode="RGB"), "GIF")


def pdf_bytes() -> bytes:
    return b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(side: int) -> bytes:
    """A PNG of a few hundred bytes whose header declares side x side 8-bit grey pixels.

    Only the first rows are present (compressed zeros): decoding it would allocate side**2 bytes.
    """
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (side + 1) * 4, 9)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def jpeg_declaring(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0..SOF2) claiming width x height; the scan is unchanged."""
    pos = 2
    while pos + 4 <= len(jpeg):
        if jpeg[pos] != 0xFF:
            raise ValueError(f"JPEG marker expected at byte {pos}")
        marker = jpeg[pos + 1]
        (length,) = struct.unpack(">H", jpeg[pos + 2 : pos + 4])
        if marker in (0xC0, 0xC1, 0xC2):
            size_at = pos + 5  # after marker (2), length (2), precision (1)
            return jpeg[:size_at] + struct.pack(">HH", height, width) + jpeg[size_at + 4 :]
        pos += 2 + length
    raise ValueError("no SOF0/SOF1/SOF2 frame header found in the JPEG")


def exif_rotated_trio(photo_jpeg: bytes) -> tuple[bytes, bytes, bytes]:
    """(JPEG with EXIF orientation 6, its decoded pixels upright as PNG, its decoded pixels as stored as PNG)."""
    with Image.open(io.BytesIO(photo_jpeg)) as photo:
        upright = photo.convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: a quarter turn to the left
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = 6
    exif_jpeg = _save(stored, "JPEG", quality=95, exif=exif.tobytes())
    with Image.open(io.BytesIO(exif_jpeg)) as decoded:
        as_stored = decoded.convert("RGB")
    # Orientation 6 is displayed by turning the stored pixels 90 degrees clockwise (ROTATE_270).
    return exif_jpeg, _save(as_stored.transpose(Image.Transpose.ROTATE_270), "PNG"), _save(as_stored, "PNG")
