"""Typed predict() parameters become the model's JSON-Schema; the validator names failing fields."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from predictd.core.validation import InputRules, validate_input
from predictd.errors import ApiError, ErrorId
from predictd.runtime.predictor import BasePredictor, input_schema, output_schema


class Resize(BasePredictor):
    def predict(
        self,
        prompt: str = Field(description="What to draw", max_length=50),
        width: int = Field(default=512, ge=64, le=2048),
        mode: Literal["fast", "best"] = "fast",
        seed: int | None = None,
    ) -> list[str]:
        return [prompt]


def test_schema_from_type_hints() -> None:
    schema = input_schema(Resize)
    assert schema["required"] == ["prompt"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["width"]["minimum"] == 64
    assert schema["properties"]["mode"]["enum"] == ["fast", "best"]
    assert output_schema(Resize) == {"items": {"type": "string"}, "type": "array"}


@pytest.mark.parametrize(
    ("value", "fragments"),
    [
        ({}, ["input.prompt is required"]),
        ({"prompt": "x", "width": 10}, ["input.width", "minimum of 64"]),
        ({"prompt": "x", "mode": "slow"}, ["input.mode", "'slow'"]),
        ({"prompt": "x", "colour": "red"}, ["unknown field(s) 'colour'", "allowed:"]),
        ({"prompt": 5}, ["input.prompt", "not of type 'string'"]),
        ({"prompt": "x" * 51}, ["input.prompt", "too long"]),
    ],
)
def test_validation_messages_name_the_field(value: dict[str, object], fragments: list[str]) -> None:
    with pytest.raises(ApiError) as caught:
        validate_input(InputRules.of(input_schema(Resize)), value)
    assert caught.value.error_id is ErrorId.INVALID_INPUT
    for fragment in fragments:
        assert fragment in caught.value.message


def test_valid_input_passes() -> None:
    validate_input(InputRules.of(input_schema(Resize)), {"prompt": "a cat", "width": 1024, "seed": None})


def test_input_must_be_an_object() -> None:
    with pytest.raises(ApiError, match="JSON object"):
        validate_input(InputRules.of(input_schema(Resize)), ["a"])
