"""Decode a document's or query's ``image`` field: a file path, raw bytes or base64 text.

Errors are InputErrors with a message only; callers add the source, row and field.
"""

from __future__ import annotations

import base64
import binascii
import io
from pathlib import Path
from typing import Any

from irtk.errors import InputError

# A path longer than this is certainly base64 (and would make the OS call fail noisily).
_MAX_PATH = 4096


def _open_bytes(data: bytes, what: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # force the decode now, so truncated files fail here and not mid-batch
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{what} is not a readable image ({len(data)} bytes): {e}") from None
    return image.convert("RGB")


def decode_image(value: Any, *, base_dir: Path | None = None) -> Any:
    """An RGB ``PIL.Image`` from a path (relative ones against ``base_dir``, then the working
    folder), bytes, a ``data:`` URI or base64 text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return _open_bytes(bytes(value), "image bytes")
    if not isinstance(value, str):
        raise InputError(f"expected a path, bytes or base64 text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise InputError("empty image value")
    if text.startswith("data:"):
        _, _, text = text.partition(",")
        return _open_bytes(_b64(text), "data URI")
    if len(text) < _MAX_PATH:
        candidates = [Path(text)]
        if base_dir is not None and not Path(text).is_absolute():
            candidates.insert(0, base_dir / text)
        for path in candidates:
            if path.is_file():
                try:
                    data = path.read_bytes()
                except OSError as e:
                    raise InputError(f"cannot read image file {path}: {e.strerror}") from None
                return _open_bytes(data, f"file {path}")
        looks_like_path = "/" in text and "=" not in text[-2:] and "." in text.rsplit("/", 1)[-1]
        if looks_like_path or text.lower().endswith((".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")):
            raise InputError(f"image file not found: {text}")
    return _open_bytes(_b64(text), "base64 image")


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("not an existing file path and not valid base64") from None


def encode_png(image: Any) -> str:
    """Base64 PNG text for a PIL image (how the testbed ships its images inline)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")
