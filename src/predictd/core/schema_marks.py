"""The marks predictd adds to a model's JSON-Schema, and the reserved inputs every model understands.

Written by the runtime (a predictor's type hints become its ``input_schema``, ``ImageInput`` and ``Prompt``
marked), read by admission (which fields are inline images or moderated prompts), by the console (how to
draw a form) and by the worker's pipeline. The API process reads them from the schema a worker announced,
never from the model's code.
"""

from __future__ import annotations

from typing import Any

# JSON-Schema keywords predictd adds to mark what the runtime must handle.
MEDIA_KEY = "x-predictd-media"
MODERATE_KEY = "x-predictd-moderate"

# Reserved input names every model understands when they apply to it (FASHN puts them inside `inputs`).
MODERATION_LEVEL = "moderation_level"
OUTPUT_FORMAT = "output_format"
RETURN_BASE64 = "return_base64"


def runtime_options(image_inputs: bool, moderated_text: bool, image_outputs: bool) -> dict[str, Any]:
    """The reserved inputs that apply to a model, as JSON-Schema properties."""
    properties: dict[str, Any] = {}
    if image_inputs or moderated_text or image_outputs:
        properties[MODERATION_LEVEL] = {
            "type": "string",
            "enum": ["conservative", "permissive", "none"],
            "default": "conservative",
            "description": "How strictly inputs and outputs are moderated.",
        }
    if image_outputs:
        properties[OUTPUT_FORMAT] = {"type": "string", "enum": ["png", "jpeg"], "default": "png"}
        properties[RETURN_BASE64] = {
            "type": "boolean",
            "default": False,
            "description": "Inline images as data URIs instead of storing them behind URLs.",
        }
    return properties


def fields_marked(schema: dict[str, Any], key: str, value: str) -> list[str]:
    """Top-level input names whose schema (or array item schema) carries ``key: value``, also as one of
    the alternatives of an optional field (``anyOf`` / ``oneOf``, e.g. ``ImageInput | None``)."""
    found = []
    for name, prop in schema.get("properties", {}).items():
        alternatives = [prop, *prop.get("anyOf", ()), *prop.get("oneOf", ())]
        if any(_marked(alternative, key, value) for alternative in alternatives):
            found.append(name)
    return found


def _marked(prop: dict[str, Any], key: str, value: str) -> bool:
    item = prop.get("items", {}) if prop.get("type") == "array" else {}
    return bool(prop.get(key) == value or item.get(key) == value)


def schema_mentions(schema: Any, key: str, value: str) -> bool:
    if isinstance(schema, dict):
        return schema.get(key) == value or any(schema_mentions(v, key, value) for v in schema.values())
    if isinstance(schema, list):
        return any(schema_mentions(v, key, value) for v in schema)
    return False
