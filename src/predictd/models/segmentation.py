"""``background-remove`` and ``background-change``: MediaPipe selfie segmentation on the CPU.

The segmentation network (``selfie_segmentation.tflite``, 250 kB) ships inside the mediapipe 0.10.21 wheel;
nothing is downloaded. mediapipe and OpenCV are imported in ``setup()``, i.e. only in worker processes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field

from ..runtime.predictor import BasePredictor
from ..runtime.types import ImageInput, ImageOutput
from ._imaging import HEX_COLOUR, blend, cover, parse_hex_colour, rgb_array, with_alpha


class _Segmenter(BasePredictor):
    """Loads the person segmentation network once per worker."""

    _segmenter: Any = None

    def setup(self) -> None:
        import mediapipe as mp

        # model_selection=0: the general 256x256 model (1 is the 144x256 landscape one, for video calls).
        self._segmenter = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)
        # The graph starts on the first frame: run one now so that setup_time covers the whole load.
        self._segmenter.process(np.zeros((64, 64, 3), dtype=np.uint8))

    def person_mask(self, rgb: NDArray[np.uint8]) -> NDArray[np.float32]:
        """Per-pixel probability (H x W, in [0, 1]) that the pixel belongs to a person."""
        result = self._segmenter.process(rgb)
        mask = np.asarray(result.segmentation_mask, dtype=np.float32)
        return np.clip(mask, 0.0, 1.0)


class BackgroundRemove(_Segmenter):
    """Cuts the person out of a photo: a PNG whose alpha channel is the segmentation mask."""

    def predict(
        self,
        image: ImageInput,
        threshold: float | None = Field(
            default=None,
            ge=0.0,
            le=1.0,
            description="Make the mask hard: opaque where the person probability is at least this, "
            "transparent elsewhere. Omitted: a soft mask (edges keep partial transparency).",
        ),
    ) -> ImageOutput:
        rgb = rgb_array(image)
        mask = self.person_mask(rgb)
        if threshold is not None:
            mask = (mask >= threshold).astype(np.float32)
        return with_alpha(rgb, mask)


class BackgroundChange(_Segmenter):
    """Keeps the person and replaces everything else by a colour or by another image."""

    def predict(
        self,
        image: ImageInput,
        background_color: str = Field(
            default="#ffffff", pattern=HEX_COLOUR, description="Background colour as #rrggbb (or #rgb)."
        ),
        background_image: ImageInput | None = Field(
            default=None, description="A background photo, scaled to cover the image; wins over the colour."
        ),
    ) -> ImageOutput:
        rgb = rgb_array(image)
        height, width = rgb.shape[:2]
        if background_image is not None:
            background = rgb_array(cover(background_image, (width, height)))
        else:
            colour = parse_hex_colour(background_color, "input.background_color")
            background = np.empty_like(rgb)
            background[...] = np.array(colour, dtype=np.uint8)
        return blend(rgb, background, self.person_mask(rgb))
