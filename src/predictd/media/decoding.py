"""Pillow decoding of input images, restricted to common raster formats (never EPS, which would run
Ghostscript) and refusing an image whose width*height is over the cap before any pixel is decompressed.

Pillow is imported on the first image: the API process (which imports this package for data-URI sizes)
and a worker whose model takes no image never load it.
"""

from __future__ import annotations

import functools
import io
import re
import warnings
from typing import TYPE_CHECKING

from ..errors import ImageLoadError
from .limits import MediaLimits

if TYPE_CHECKING:
    from PIL import Image

# Formats Pillow may decode. Deliberately short: no EPS (runs Ghostscript), no exotic scientific formats.
SAFE_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


@functools.lru_cache(maxsize=1)
def _safe_formats() -> tuple[str, ...]:
    from PIL import Image

    Image.init()
    return tuple(name for name in SAFE_FORMATS if name in Image.OPEN)


_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


def decode_image(data: bytes, *, field: str, limits: MediaLimits, source: str) -> Image.Image:
    """A fully loaded image from ``data`` (read from ``source``, as messages name it)."""
    from PIL import Image

    formats = _safe_formats()
    undecodable = f"{field}: {source} cannot be decoded as an image (supported: {', '.join(formats)})"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ImageLoadError(
                    f"{field}: image is {width * height} pixels, over the {limits.max_pixels} limit "
                    f"({width}x{height})"
                )
            image.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        match = _BOMB_PIXELS.search(str(exc))
        pixels = int(match.group(1)) if match else None
        if pixels is not None and pixels > limits.max_pixels:
            message = f"image is {pixels} pixels, over the {limits.max_pixels} limit"
        elif pixels is not None:
            message = f"image is {pixels} pixels, over Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels"
        else:
            message = f"image is over the {limits.max_pixels} pixel limit (decompression bomb)"
        raise ImageLoadError(f"{field}: {message}") from None
    except Exception:
        # UnidentifiedImageError, OSError (truncated), SyntaxError, ValueError, struct.error, EOFError...
        raise ImageLoadError(undecodable) from None
    return image
