"""A user's own model for predictd: image thumbnails. Copy this folder and change ``predict()``.

Run it (from the repository root, where the relative ``ref`` in predictd.toml resolves)::

    .venv/bin/predictd --config examples/thumbnail/predictd.toml serve
"""

from __future__ import annotations

from typing import Literal

from PIL import Image
from pydantic import Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from predictd.errors import InputValidationError
from predictd.runtime import BasePredictor
from predictd.runtime.types import ImageInput, ImageOutput

FILTERS = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class Result(TypedDict):
    """A JSON object output (its schema becomes the model's output_schema). Each ImageOutput in it, as in
    a list, is moderated, stored and replaced by its URL (or a data URI with return_base64)."""

    thumbnail: ImageOutput
    width: int
    height: int


class Thumbnail(BasePredictor):
    """Shrinks an image to fit in a ``size`` x ``size`` box, keeping its aspect ratio."""

    def setup(self) -> None:
        # Runs once per worker process, before any prediction: load weights, open sessions, warm up.
        # Import heavy libraries here (not at the top of the module) so that only workers pay for them.
        self.filters = dict(FILTERS)

    def predict(
        self,
        image: ImageInput,
        size: int = Field(default=128, ge=8, le=1024, description="Longest side of the thumbnail, px."),
        resample: Literal["lanczos", "bicubic", "nearest"] = "lanczos",
        allow_upscale: bool = Field(default=False, description="Enlarge images smaller than `size`."),
    ) -> Result:
        if max(image.size) < size and not allow_upscale:
            # A named error fails the prediction with that name (here InputValidationError).
            raise InputValidationError(
                f"input.image is {image.width}x{image.height}, smaller than size={size}; "
                "set allow_upscale to enlarge it"
            )
        scale = size / max(image.size)
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        thumbnail = image.convert("RGB").resize(target, self.filters[resample])
        return Result(thumbnail=thumbnail, width=target[0], height=target[1])
