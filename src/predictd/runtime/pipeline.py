"""What the worker does around ``predict()``: load and moderate media inputs, then moderate, encode and
store media outputs. Each failure is raised as the catalog's runtime error, naming the input."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..core.schema_marks import MEDIA_KEY, MODERATION_LEVEL, OUTPUT_FORMAT, RETURN_BASE64, fields_marked
from ..errors import ContentModerationError, PipelineError
from ..media.outputs import LocalOutputs
from ..outbound import Deadline
from .types import loaded_image_class

if TYPE_CHECKING:
    from PIL import Image

    from ..media import MediaLimits

CONFIG_ENV = "PREDICTD_WORKER_CONFIG"
MODEL_TIMEOUT_ENV = "PREDICTD_MODEL_TIMEOUT_S"  # the served model's timeout_s, set per worker

# The image URLs of one prediction are fetched within this share of the model's timeout_s, all together
# (each also within [media] total_timeout_s): a slow URL fails the prediction as ImageLoadError naming its
# input, leaving the model the rest, instead of holding the worker until the deadline.
FETCH_SHARE_OF_TIMEOUT = 0.5


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """The part of the settings a worker needs, handed over in an environment variable."""

    outputs_dir: str = ""
    outputs_ttl_s: float = 72 * 3600
    media: dict[str, Any] = field(default_factory=dict)
    image_moderation: dict[str, float] = field(default_factory=dict)
    model_timeout_s: float | None = None  # from MODEL_TIMEOUT_ENV: one config serves every model

    def to_env(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_env(cls) -> WorkerConfig:
        raw = os.environ.get(CONFIG_ENV)
        config = cls(**orjson.loads(raw)) if raw else cls()
        timeout = os.environ.get(MODEL_TIMEOUT_ENV)
        return replace(config, model_timeout_s=float(timeout)) if timeout else config

    def media_limits(self) -> MediaLimits:
        """The ``[media]`` settings (one flat table) as the image loader's limits."""
        from ..media import MediaLimits
        from ..outbound import OutboundLimits

        fetch = dict(self.media)
        sizes = {name: fetch.pop(name) for name in ("max_bytes", "max_pixels") if name in fetch}
        if "allowed_networks" in fetch:
            fetch["allowed_networks"] = tuple(fetch["allowed_networks"])
        return MediaLimits(**sizes, fetch=OutboundLimits(**fetch))


class Pipeline:
    def __init__(self, schema: dict[str, Any], model_params: set[str], config: WorkerConfig) -> None:
        self._image_fields = fields_marked(schema, MEDIA_KEY, "image")
        # Reserved options the model does not take itself are consumed here, never passed to predict().
        self._reserved = {MODERATION_LEVEL, OUTPUT_FORMAT, RETURN_BASE64} - model_params
        # The media loader is imported only by a model that takes images (a model without never needs it).
        self._limits = config.media_limits() if self._image_fields else None
        timeout = config.model_timeout_s
        self._fetch_budget_s = timeout * FETCH_SHARE_OF_TIMEOUT if timeout is not None else None
        self._outputs = (
            LocalOutputs(Path(config.outputs_dir), config.outputs_ttl_s) if config.outputs_dir else None
        )
        self._image_policy = config.image_moderation
        self._moderator: Any = None

    def _image_moderator(self) -> Any:
        if self._moderator is None:
            from ..safety.image import ImageModerator, ImagePolicy

            self._moderator = ImageModerator(ImagePolicy(**self._image_policy))
        return self._moderator

    def prepare(self, raw: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split reserved options off, load and moderate images. Returns (model inputs, options)."""
        inputs = dict(raw)
        options = {name: inputs.pop(name) for name in self._reserved if name in inputs}
        level = str(options.get(MODERATION_LEVEL, "conservative"))
        budget = self._fetch_budget_s
        deadline = Deadline.after(budget) if budget is not None else None
        for name in self._image_fields:
            value = inputs.get(name)
            if isinstance(value, str):
                inputs[name] = self._load(value, f"input.{name}", level, deadline)
            elif isinstance(value, list):
                inputs[name] = [
                    self._load(item, f"input.{name}[{i}]", level, deadline) if isinstance(item, str) else item
                    for i, item in enumerate(value)
                ]
        return inputs, options

    def _load(self, value: str, where: str, level: str, deadline: Deadline | None) -> Image.Image:
        from ..media import load_image

        assert self._limits is not None  # made in __init__ for a model with image fields
        image = load_image(value, field=where, limits=self._limits, deadline=deadline)
        self._moderate(image, where, level)
        return image

    def _moderate(self, image: Image.Image, where: str, level: str) -> None:
        from ..safety import ModerationLevel, ModerationUnavailable

        if level == ModerationLevel.NONE:
            return
        try:
            verdict = self._image_moderator().check(image, ModerationLevel(level))
        except ModerationUnavailable as exc:
            raise PipelineError(f"{where}: image moderation is unavailable: {exc}") from None
        if not verdict.allowed:
            raise ContentModerationError(f"{where}: {verdict.reason}")

    def finish(self, result: Any, options: dict[str, Any]) -> Any:
        """Moderate every image in the result, then encode and store them; other values pass through.
        Nothing is stored unless every image passed, so a refused output leaves no file behind."""
        image_class = loaded_image_class()  # None: Pillow was never loaded here, so there is no image
        level = str(options.get(MODERATION_LEVEL, "conservative"))
        for where, image in _images(result, "output", image_class):
            self._moderate(image, where, level)
        fmt = str(options.get(OUTPUT_FORMAT, "png"))
        inline = bool(options.get(RETURN_BASE64, False))
        return _replace_images(result, image_class, lambda image: self._encode(image, fmt, inline))

    def _encode(self, image: Image.Image, fmt: str, inline: bool) -> str:
        buffer = io.BytesIO()
        if fmt == "jpeg":
            image.convert("RGB").save(buffer, "JPEG", quality=90)
        else:
            image.save(buffer, "PNG")
        data = buffer.getvalue()
        if inline or self._outputs is None:
            return f"data:image/{fmt};base64,{base64.b64encode(data).decode()}"
        return self._outputs.write(data, fmt)


def _images(value: Any, where: str, image_class: type[Image.Image] | None) -> list[tuple[str, Image.Image]]:
    if image_class is None:
        return []
    if isinstance(value, image_class):
        return [(where, value)]
    if isinstance(value, list | tuple):
        return [found for i, v in enumerate(value) for found in _images(v, f"{where}[{i}]", image_class)]
    if isinstance(value, dict):
        return [found for k, v in value.items() for found in _images(v, f"{where}.{k}", image_class)]
    return []


def _replace_images(
    value: Any, image_class: type[Image.Image] | None, encode: Callable[[Image.Image], str]
) -> Any:
    if image_class is not None and isinstance(value, image_class):
        return encode(value)
    if isinstance(value, list | tuple):
        return [_replace_images(v, image_class, encode) for v in value]
    if isinstance(value, dict):
        return {k: _replace_images(v, image_class, encode) for k, v in value.items()}
    return value
