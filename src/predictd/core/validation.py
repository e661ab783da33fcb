"""Checking a prediction's ``input`` against its model's JSON-Schema, with messages that name the field."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from ..errors import ApiError, ErrorId
from .schema_marks import MEDIA_KEY, MODERATE_KEY, fields_marked

MAX_REPORTED = 10


def compile_schema(schema: dict[str, Any]) -> Draft202012Validator:
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@dataclass(frozen=True, slots=True)
class InputRules:
    """What a submit checks of an input, derived once from its model's schema rather than on every submit."""

    schema: dict[str, Any]
    validator: Draft202012Validator
    image_fields: tuple[str, ...]  # inline images count against the request's media limit
    moderated_fields: tuple[str, ...]  # text screened by the moderator

    @classmethod
    def of(cls, schema: dict[str, Any]) -> InputRules:
        return cls(
            schema,
            compile_schema(schema),
            tuple(fields_marked(schema, MEDIA_KEY, "image")),
            tuple(fields_marked(schema, MODERATE_KEY, "text")),
        )


def _field(path: Iterable[Any]) -> str:
    out = "input"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def describe(error: ValidationError) -> str:
    where = _field(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in error.validator_value if name not in instance]
        return "; ".join(f"{where}.{name} is required" for name in missing)
    if error.validator == "additionalProperties" and isinstance(instance, dict):
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in instance if k not in known)
        names = ", ".join(repr(k) for k in unknown)
        return f"{where} has unknown field(s) {names}; allowed: {', '.join(sorted(known)) or 'none'}"
    return f"{where}: {error.message}"


def validate_input(rules: InputRules, value: Any) -> None:
    if not isinstance(value, dict):
        raise ApiError(ErrorId.INVALID_INPUT, "input must be a JSON object")
    errors = sorted(
        rules.validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), e.validator)
    )
    if errors:
        messages = [describe(e) for e in errors[:MAX_REPORTED]]
        if len(errors) > MAX_REPORTED:
            messages.append(f"and {len(errors) - MAX_REPORTED} more")
        raise ApiError(ErrorId.INVALID_INPUT, "; ".join(messages))
