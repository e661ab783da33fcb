"""Small image helpers shared by the built-in vision models (Pillow and numpy only: no heavy imports)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from ..errors import InputValidationError

HEX_COLOUR = r"^#?(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})$"


def rgb_array(image: Image.Image) -> NDArray[np.uint8]:
    """The image as a C-contiguous H x W x 3 uint8 RGB array (what mediapipe and OpenCV expect)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))


def parse_hex_colour(value: str, field: str) -> tuple[int, int, int]:
    digits = value.removeprefix("#")
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    try:
        if len(digits) != 6:
            raise ValueError(value)
        return (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    except ValueError:
        raise InputValidationError(f"{field}: {value!r} is not a #rrggbb colour") from None


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``image`` to fill ``size`` and crop the overflow, centred (CSS ``object-fit: cover``)."""
    return ImageOps.fit(image.convert("RGB"), size, Image.Resampling.LANCZOS)


def with_alpha(rgb: NDArray[np.uint8], alpha: NDArray[np.floating[Any]]) -> Image.Image:
    """An RGBA image from an RGB array and an alpha mask in [0, 1]."""
    a = np.clip(alpha * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, a]), "RGBA")


def blend(
    foreground: NDArray[np.uint8], background: NDArray[np.uint8], alpha: NDArray[np.floating[Any]]
) -> Image.Image:
    """``foreground`` over ``background`` with a per-pixel alpha in [0, 1], as an RGB image."""
    a = np.clip(alpha, 0.0, 1.0)[..., None]
    out = foreground.astype(np.float32) * a + background.astype(np.float32) * (1.0 - a)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB")
