"""``pose-detect`` and ``tryon-preview``: MediaPipe BlazePose (``model_complexity=1``) on the CPU.

The detector and landmark networks (``pose_detection.tflite``, ``pose_landmark_full.tflite``) ship inside
the mediapipe 0.10.21 wheel; nothing is downloaded. mediapipe and OpenCV are imported in ``setup()``.
Both models fail with ``PoseError`` when no person is found, as a hosted try-on model does.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import BaseModel, Field

from ..errors import InputValidationError, PoseError
from ..runtime.predictor import BasePredictor
from ..runtime.types import ImageInput, ImageOutput
from ._imaging import blend, rgb_array

# BlazePose landmark indices used by the try-on composite.
LEFT_SHOULDER, RIGHT_SHOULDER, LEFT_HIP, RIGHT_HIP = 11, 12, 23, 24
MIN_VISIBILITY = 0.5


class Keypoint(BaseModel):
    """One BlazePose landmark. ``x`` / ``y`` are fractions of the image width / height (0 = left / top);
    ``z`` is depth relative to the hips on about the same scale as ``x`` (smaller = nearer the camera);
    ``visibility`` is the likelihood, in [0, 1], that the point is visible rather than occluded."""

    name: str
    x: float
    y: float
    z: float
    visibility: float


class _PoseModel(BasePredictor):
    """Loads BlazePose once per worker."""

    _pose: Any = None
    _names: tuple[str, ...] = ()

    def setup(self) -> None:
        import mediapipe as mp

        solution = mp.solutions.pose
        self._names = tuple(landmark.name.lower() for landmark in solution.PoseLandmark)
        self._pose = solution.Pose(
            static_image_mode=True,  # every request is an unrelated photo: no tracking between frames
            model_complexity=1,
            enable_segmentation=False,
            min_detection_confidence=0.5,
        )
        # The graph starts on the first frame: run one now so that setup_time covers the whole load.
        self._pose.process(np.zeros((64, 64, 3), dtype=np.uint8))

    def keypoints(self, rgb: NDArray[np.uint8], field: str) -> list[Keypoint]:
        result = self._pose.process(rgb)
        if result.pose_landmarks is None:
            raise PoseError(f"{field}: no person was found in the image")
        return [
            Keypoint(
                name=name,
                x=float(point.x),
                y=float(point.y),
                z=float(point.z),
                visibility=float(point.visibility),
            )
            for name, point in zip(self._names, result.pose_landmarks.landmark, strict=True)
        ]


class PoseDetect(_PoseModel):
    """The 33 BlazePose body keypoints of the most prominent person in the image."""

    def predict(self, image: ImageInput) -> list[Keypoint]:
        return self.keypoints(rgb_array(image), "input.image")


class TryonPreview(_PoseModel):
    """A quick try-on preview: finds the body pose, then warps the garment onto the torso (shoulders to
    hips) and composites it over the photo. Fails with ``PoseError`` when no person (or no shoulders) is
    found, before any compositing."""

    _cv2: Any = None

    def setup(self) -> None:
        super().setup()
        import cv2

        self._cv2 = cv2

    def predict(
        self,
        model_image: ImageInput = Field(description="A photo of the person, facing the camera."),
        garment_image: ImageInput = Field(
            description="The garment on a plain background (or with transparency), e.g. a product shot."
        ),
    ) -> ImageOutput:
        cv2 = self._cv2
        person = rgb_array(model_image)
        height, width = person.shape[:2]
        quad = torso_quad(self.keypoints(person, "input.model_image"), width, height)
        garment, alpha = garment_cutout(garment_image)
        g_height, g_width = alpha.shape
        source = np.array([[0, 0], [g_width, 0], [g_width, g_height], [0, g_height]], dtype=np.float32)
        matrix = cv2.getPerspectiveTransform(source, quad)
        warped = cv2.warpPerspective(garment, matrix, (width, height), flags=cv2.INTER_LINEAR)
        warped_alpha = cv2.warpPerspective(alpha, matrix, (width, height), flags=cv2.INTER_LINEAR)
        return blend(np.asarray(warped, dtype=np.uint8), person, np.asarray(warped_alpha, dtype=np.float32))


def torso_quad(points: list[Keypoint], width: int, height: int) -> NDArray[np.float32]:
    """Where the garment goes, in pixels: top-left, top-right, bottom-right, bottom-left. The shoulder line,
    widened for the sleeves and raised for the collar, over the hip line, slightly widened."""
    shoulders = [points[LEFT_SHOULDER], points[RIGHT_SHOULDER]]
    if min(p.visibility for p in shoulders) < MIN_VISIBILITY:
        raise PoseError("input.model_image: the person's shoulders are not visible")
    top = sorted((np.array([p.x * width, p.y * height]) for p in shoulders), key=lambda v: float(v[0]))
    hips = [points[LEFT_HIP], points[RIGHT_HIP]]
    bottom = sorted((np.array([p.x * width, p.y * height]) for p in hips), key=lambda v: float(v[0]))
    span = float(np.linalg.norm(top[1] - top[0]))
    if span < 8.0:
        raise PoseError("input.model_image: the person is too small in the image for a try-on")
    across = (top[1] - top[0]) / span
    up = np.array([across[1], -across[0]])
    if float(np.dot((bottom[0] + bottom[1]) / 2 - (top[0] + top[1]) / 2, -up)) < 0.5 * span:
        # Hips above or level with the shoulders (BlazePose extrapolated them badly): assume upright.
        bottom = [top[0] - 1.5 * span * up, top[1] - 1.5 * span * up]
    hip_across = bottom[1] - bottom[0]
    hip_across = hip_across / max(float(np.linalg.norm(hip_across)), 1e-6)
    quad = np.array(
        [
            top[0] - 0.25 * span * across + 0.08 * span * up,
            top[1] + 0.25 * span * across + 0.08 * span * up,
            bottom[1] + 0.15 * span * hip_across,
            bottom[0] - 0.15 * span * hip_across,
        ],
        dtype=np.float32,
    )
    quad[:, 1] = np.clip(quad[:, 1], -height, 2 * height)  # keep a wild extrapolation finite
    return quad


def garment_cutout(image: Image.Image) -> tuple[NDArray[np.uint8], NDArray[np.float32]]:
    """The garment cropped to its bounding box, with its alpha mask in [0, 1]: the image's own alpha when it
    has one, otherwise everything that differs from the (plain) background colour seen along the border."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        rgb = np.ascontiguousarray(rgba[..., :3])
        alpha = rgba[..., 3].astype(np.float32) / 255.0
    else:
        rgb = rgb_array(image)
        border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]]).astype(np.float32)
        background = np.median(border, axis=0)
        distance = np.linalg.norm(rgb.astype(np.float32) - background, axis=2)
        alpha = np.clip((distance - 30.0) / 30.0, 0.0, 1.0).astype(np.float32)
    rows = np.flatnonzero(alpha.max(axis=1) > 0.5)
    cols = np.flatnonzero(alpha.max(axis=0) > 0.5)
    if rows.size == 0 or cols.size == 0:
        raise InputValidationError("input.garment_image: no garment found (the image is a plain background)")
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return (
        np.ascontiguousarray(rgb[top:bottom, left:right]),
        np.ascontiguousarray(alpha[top:bottom, left:right]),
    )
