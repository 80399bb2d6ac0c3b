"""Pure image functions used by bronze: GDPR metadata scrubbing and decode checks.

Why byte-level scrubbing rather than re-saving with Pillow: re-encoding a JPEG changes its pixels
(lossy quantisation again) and its hash; dropping the metadata segments keeps every entropy-coded
byte, so the decoded pixels are identical to the source and the features do not drift.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

# JPEG APPn segments kept: APP0 (JFIF header), APP2 only when it is an ICC profile (colour
# management), APP14 (Adobe: tells decoders how to convert CMYK/YCCK). Everything else that can
# carry personal data is dropped: APP1 (EXIF with GPS, XMP), APP3..APP13 (incl. IPTC in APP13),
# APP15, and COM comments.
_JPEG_KEEP_APP = {0xE0, 0xEE}
_ICC_TAG = b"ICC_PROFILE\x00"
_JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length field

# PNG chunks kept: the ones needed to decode the pixels and their colour exactly. Text chunks
# (tEXt, zTXt, iTXt), eXIf, tIME and any unknown ancillary chunk are dropped.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"cHRM", b"gAMA", b"iCCP", b"sBIT", b"sRGB",
    b"bKGD", b"hIST", b"pHYs", b"cICP", b"mDCV", b"cLLI",
}

EXIF_ORIENTATION_TAG = 0x0112


class ScrubError(ValueError):
    """The byte stream is not a well-formed JPEG/PNG container; the message says where."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scrub_jpeg(data: bytes) -> bytes:
    """Return the JPEG without APP1/APP3-13/APP15/COM segments and without bytes after EOI."""
    if not data.startswith(b"\xff\xd8"):
        raise ScrubError("JPEG does not start with SOI (FFD8)")
    out = bytearray(b"\xff\xd8")
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise ScrubError(f"JPEG marker expected at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            raise ScrubError("JPEG ends inside a marker")
        marker = data[pos]
        pos += 1
        if marker == 0xD9:  # EOI: anything after it is dropped (it can hide data)
            out += b"\xff\xd9"
            return bytes(out)
        if marker in _JPEG_STANDALONE:
            out += bytes((0xFF, marker))
            continue
        if pos + 2 > size:
            raise ScrubError(f"JPEG segment FF{marker:02X} is truncated")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        end = pos + length
        if length < 2 or end > size:
            raise ScrubError(f"JPEG segment FF{marker:02X} at byte {pos - 2} runs past the end of the file")
        payload = data[pos + 2 : end]
        keep = (
            marker not in range(0xE0, 0xF0) and marker != 0xFE
            or marker in _JPEG_KEEP_APP
            or (marker == 0xE2 and payload.startswith(_ICC_TAG))
        )
        if keep:
            out += bytes((0xFF, marker)) + data[pos:end]
        pos = end
        if marker == 0xDA:  # SOS: copy the entropy-coded scan up to the next real marker
            scan_end = _end_of_scan(data, pos)
            out += data[pos:scan_end]
            pos = scan_end
    raise ScrubError("JPEG has no EOI marker (truncated file)")


def _end_of_scan(data: bytes, pos: int) -> int:
    """Index of the first marker after entropy-coded data (FF00 stuffing and RSTn are part of it)."""
    size = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= size:
            return size
        nxt = data[pos + 1]
        if nxt == 0x00 or 0xD0 <= nxt <= 0xD7 or nxt == 0xFF:
            pos += 1 if nxt == 0xFF else 2
            continue
        return pos


def scrub_png(data: bytes) -> bytes:
    """Return the PNG with only the chunks in _PNG_KEEP (CRCs are copied, chunks are not re-encoded)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ScrubError("PNG does not start with the PNG signature")
    out = bytearray(_PNG_SIGNATURE)
    pos, size = len(_PNG_SIGNATURE), len(data)
    while pos < size:
        if pos + 8 > size:
            raise ScrubError(f"PNG chunk header truncated at byte {pos}")
        length, ctype = struct.unpack(">I4s", data[pos : pos + 8])
        end = pos + 12 + length
        if end > size:
            raise ScrubError(f"PNG chunk {ctype!r} at byte {pos} runs past the end of the file")
        if ctype in _PNG_KEEP:
            out += data[pos:end]
        pos = end
        if ctype == b"IEND":
            return bytes(out)
    raise ScrubError("PNG has no IEND chunk (truncated file)")


@dataclass(frozen=True)
class Inspection:
    """Outcome of checking one file: either accepted (content set) or rejected (reason set)."""

    content: bytes | None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    orientation: int | None = None
    reason: str | None = None


def inspect_image(data: bytes, max_pixels: int) -> Inspection:
    """Scrub and fully decode one file; reject with a reason instead of raising.

    The checks run on the scrubbed bytes (what bronze stores), with a full decode so that a
    truncated file is caught here and not later in silver. The pixel-count guard is read from the
    header before decoding, so a decompression bomb costs nothing.
    """
    if not data:
        return Inspection(None, reason="empty_file: the file has 0 bytes (or vanished while it was read)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as original:
                image_format = original.format
                width, height = original.size
                orientation = _orientation(original)
    except Image.DecompressionBombError as exc:
        return Inspection(None, reason=f"too_many_pixels: {exc}")
    except UnidentifiedImageError:
        return Inspection(None, reason="not_an_image: no image decoder recognises the bytes")
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a reason, not a crash
        return Inspection(None, reason=f"unreadable_header: {type(exc).__name__}: {exc}")
    if image_format not in ("JPEG", "PNG"):
        return Inspection(None, reason=f"unsupported_format: {image_format} (only JPEG and PNG are accepted)")
    if width * height > max_pixels:
        return Inspection(
            None,
            reason=f"too_many_pixels: {width}x{height} declared, over bronze.max_image_pixels={max_pixels}",
        )
    try:
        clean = scrub_jpeg(data) if image_format == "JPEG" else scrub_png(data)
    except ScrubError as exc:
        return Inspection(None, reason=f"malformed_{image_format.lower()}: {exc}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(clean)) as image:
                image.load()
    except Exception as exc:  # noqa: BLE001
        return Inspection(None, reason=f"undecodable: {type(exc).__name__}: {exc}")
    return Inspection(clean, image_format, width, height, orientation)


def _orientation(image: Image.Image) -> int | None:
    try:
        value = image.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:  # noqa: BLE001 - a broken EXIF block only loses the orientation hint
        return None
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else None
