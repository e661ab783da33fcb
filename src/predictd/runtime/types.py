"""Types a model's ``predict()`` annotates its parameters and result with.

* ``ImageInput``: the caller sends an http(s) URL or a ``data:image/<fmt>;base64,`` string; the runtime
  fetches and decodes it (ImageLoadError on failure), moderates it, and passes a loaded ``PIL.Image``.
* ``ImageOutput``: return a ``PIL.Image``; the runtime encodes it (``output_format``), moderates it, and
  stores it behind an unguessable expiring URL, or inlines it as base64 when ``return_base64`` is true.
* ``Prompt``: a string checked by text moderation before the prediction is queued.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any, TypeAlias

from pydantic import Field, PlainSerializer, PlainValidator, WithJsonSchema

from ..core.schema_marks import MEDIA_KEY, MODERATE_KEY

if TYPE_CHECKING:
    from PIL import Image


def loaded_image_class() -> type[Image.Image] | None:
    """``PIL.Image.Image`` if Pillow is loaded in this process, else None: then no value can be an image.

    Pillow is imported only by what handles images (a model that takes or returns one, the media loader),
    so a worker whose model never touches an image does not load it (about 4 MiB per process)."""
    module = sys.modules.get("PIL.Image")
    return None if module is None else module.Image


def _loaded_image(value: Any) -> Image.Image:
    image_class = loaded_image_class()
    if image_class is None or not isinstance(value, image_class):
        raise ValueError("expected an image loaded by the runtime")
    return value


def _image_placeholder(value: Any) -> Any:
    # The worker replaces images by their stored URL before serialising (see runtime/pipeline.py).
    return value


if TYPE_CHECKING:
    # What a type checker sees. At run time they are Annotated[Image.Image, ...] with the validator and
    # JSON-Schema the runtime needs, from _image_types() on first use.
    ImageInput: TypeAlias = Image.Image
    ImageOutput: TypeAlias = Image.Image


def _image_types() -> dict[str, Any]:
    """ImageInput and ImageOutput, built (and Pillow imported) when a model first asks for one."""
    from PIL import Image

    return {
        "ImageInput": Annotated[
            Image.Image,
            PlainValidator(_loaded_image),
            WithJsonSchema(
                {
                    "type": "string",
                    "format": "uri",
                    MEDIA_KEY: "image",
                    "description": "An http(s) URL, or a data:image/<format>;base64, string.",
                }
            ),
        ],
        "ImageOutput": Annotated[
            Image.Image,
            PlainValidator(_loaded_image),
            PlainSerializer(_image_placeholder, when_used="always"),
            WithJsonSchema({"type": "string", "format": "uri", MEDIA_KEY: "image"}),
        ],
    }


def __getattr__(name: str) -> Any:
    if name in ("ImageInput", "ImageOutput"):
        types = _image_types()
        globals().update(types)  # built once: later lookups find them without coming here
        return types[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Prompt = Annotated[str, Field(json_schema_extra={MODERATE_KEY: "text"})]
