"""The built-in catalog without running a model: every entry loads as a predictor class whose schemas derive
from its signature, optional image inputs are recognised as media, and the try-on geometry refuses what it
cannot dress. (The models themselves run in tests/integration/test_models.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from PIL import Image, ImageDraw

from predictd.config.settings import BUILTIN_MODELS, ModelConfig
from predictd.core.schema_marks import MEDIA_KEY, fields_marked
from predictd.errors import InputValidationError, PoseError
from predictd.models._imaging import parse_hex_colour
from predictd.models.pose import Keypoint, garment_cutout, torso_quad
from predictd.runtime.predictor import input_schema, load_predictor_class, output_schema


@pytest.mark.parametrize("entry", BUILTIN_MODELS, ids=[str(m["slug"]) for m in BUILTIN_MODELS])
def test_each_builtin_model_is_configured_and_loadable(entry: dict[str, Any]) -> None:
    config = ModelConfig(**entry)
    assert config.workers == 1
    assert config.description
    cls = load_predictor_class(config.ref)
    assert input_schema(cls)["additionalProperties"] is False
    assert output_schema(cls)


def test_image_fields_of_the_vision_models() -> None:
    expected = {
        "predictd.models.segmentation:BackgroundRemove": ["image"],
        "predictd.models.segmentation:BackgroundChange": ["image", "background_image"],
        "predictd.models.pose:PoseDetect": ["image"],
        "predictd.models.pose:TryonPreview": ["model_image", "garment_image"],
        "predictd.models.ocr:Ocr": ["image"],
        "predictd.models.embed:TextEmbed": [],
    }
    for ref, fields in expected.items():
        schema = input_schema(load_predictor_class(ref))
        assert fields_marked(schema, MEDIA_KEY, "image") == fields, ref
        assert ("output_format" in schema["properties"]) is ref.endswith(
            ("BackgroundRemove", "BackgroundChange", "TryonPreview")
        )


def test_an_optional_image_input_is_media_too() -> None:
    schema = input_schema(load_predictor_class("predictd.models.segmentation:BackgroundChange"))
    background = schema["properties"]["background_image"]
    assert background["default"] is None
    assert {"type": "null"} in background["anyOf"]
    assert schema["required"] == ["image"]


def test_text_embed_output_is_a_384_vector() -> None:
    schema = output_schema(load_predictor_class("predictd.models.embed:TextEmbed"))
    assert schema == {"type": "array", "items": {"type": "number"}, "minItems": 384, "maxItems": 384}


@pytest.mark.parametrize(
    ("value", "rgb"), [("#00ff00", (0, 255, 0)), ("0A0b0C", (10, 11, 12)), ("#fff", (255,) * 3)]
)
def test_hex_colours(value: str, rgb: tuple[int, int, int]) -> None:
    assert parse_hex_colour(value, "input.c") == rgb


def test_a_bad_colour_names_its_field() -> None:
    with pytest.raises(InputValidationError, match=r"input\.c: 'green'"):
        parse_hex_colour("green", "input.c")


def keypoints(visibility: float = 0.99) -> list[Keypoint]:
    points = [Keypoint(name=f"p{i}", x=0.5, y=0.5, z=0.0, visibility=visibility) for i in range(33)]
    for index, (x, y) in {11: (0.7, 0.3), 12: (0.3, 0.3), 23: (0.65, 0.8), 24: (0.35, 0.8)}.items():
        points[index] = Keypoint(name=f"p{index}", x=x, y=y, z=0.0, visibility=visibility)
    return points


def test_torso_quad_spans_shoulders_to_hips_left_to_right() -> None:
    quad = torso_quad(keypoints(), 100, 100)
    (tl, tr, br, bl) = quad.tolist()
    assert tl[0] < 30 < 70 < tr[0]  # widened past both shoulders for the sleeves
    assert tl[1] < 30
    assert tr[1] < 30
    assert bl[1] == pytest.approx(80)
    assert br[1] == pytest.approx(80)
    assert bl[0] < 35 < 65 < br[0]


def test_torso_quad_needs_visible_shoulders() -> None:
    with pytest.raises(PoseError, match="shoulders are not visible"):
        torso_quad(keypoints(visibility=0.1), 100, 100)


def test_garment_cutout_from_a_plain_background_and_from_alpha() -> None:
    shirt = Image.new("RGB", (100, 80), (240, 240, 240))
    ImageDraw.Draw(shirt).rectangle((20, 10, 59, 69), fill=(10, 20, 200))
    rgb, alpha = garment_cutout(shirt)
    assert rgb.shape == (60, 40, 3)
    assert float(alpha.min()) == 1.0
    assert tuple(rgb[30, 20]) == (10, 20, 200)

    transparent = Image.new("RGBA", (50, 50), (0, 0, 0, 0))
    ImageDraw.Draw(transparent).ellipse((10, 10, 29, 39), fill=(255, 0, 0, 255))
    rgb, alpha = garment_cutout(transparent)
    assert alpha.shape == (30, 20)
    assert 0.0 == float(alpha[0, 0]) < float(alpha[15, 10]) == 1.0


def test_a_plain_garment_image_is_refused() -> None:
    with pytest.raises(InputValidationError, match="no garment found"):
        garment_cutout(Image.new("RGB", (40, 40), "white"))
