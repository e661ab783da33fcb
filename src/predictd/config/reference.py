"""The settings reference (docs/settings.md), rendered from the settings object itself so that every setting
is documented with its real type, default and limits. ``predictd config reference`` prints it;
tests/unit/test_settings_reference.py fails when the file in the repository is not what this renders."""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from .settings import ModelConfig, Settings

INTRO = """\
<!-- Generated from src/predictd/config/settings.py by `predictd config reference > docs/settings.md`:
edit the settings' descriptions there, not this file (tests/unit/test_settings_reference.py checks it). -->

# Settings

Every setting of predictd, from the one settings object (`src/predictd/config/settings.py`). Each is read,
by priority, from a command-line flag (those that have one, e.g. `serve --host`), the environment variable
shown (`PREDICTD_` and the name), the TOML file given with `predictd --config FILE` (or `PREDICTD_CONFIG`),
then the default. Every command reads them the same way: `serve`, `worker` and the admin commands (`keys`,
`accounts`, `plans`, `credits`). A section is a TOML table (`[media]`), or one environment variable holding
JSON (`PREDICTD_MEDIA='{"allow_private": true}'`); `[[models]]` is a TOML array of tables.
"""


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    type: str
    default: str
    description: str


def fields_of(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    yield from model.model_fields.items()


def _is_section(annotation: Any) -> typing.TypeGuard[type[BaseModel]]:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def type_name(annotation: Any) -> str:
    """How a setting's type reads in TOML terms."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return " or ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        named = [type_name(a) for a in args if a is not type(None)]
        return " or ".join(named) + (" (optional)" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}"
    if _is_section(annotation):
        return "table"
    return {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}[annotation]


def limits(field: FieldInfo) -> str:
    """The bounds pydantic enforces on a setting, as text."""
    shown = []
    for rule in field.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(rule, getattr(annotated_types, attribute.capitalize())):
                bound = getattr(rule, attribute)
                # An integer bound exactly (2147483647, not 2.14748e+09); a float as short as it reads.
                shown.append(f"{sign} {bound}" if isinstance(bound, int) else f"{sign} {bound:g}")
        if isinstance(rule, annotated_types.MinLen):
            shown.append(f"at least {rule.min_length} characters")
        pattern = getattr(rule, "pattern", None)
        if pattern is not None:
            shown.append(f"matching `{pattern}`")
    return ", ".join(shown)


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "(required)"
    else:
        value = field.default
    if value is None:
        return "(unset)"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{json.dumps(value)}`"


def rows(model: type[BaseModel], env_prefix: str | None) -> list[Row]:
    found = []
    for name, field in fields_of(model):
        if _is_section(field.annotation) or name == "models":
            continue
        shown = f"`{name}`" + (f" (`{env_prefix}{name.upper()}`)" if env_prefix else "")
        bounds = limits(field)
        kind = type_name(field.annotation) + (f", {bounds}" if bounds else "")
        found.append(Row(shown, kind, default_text(field), field.description or ""))
    return found


def _table(found: list[Row]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| setting | type | default | what it does |", "|---|---|---|---|"]
    lines += [
        f"| {cell(r.name)} | {cell(r.type)} | {cell(r.default)} | {cell(r.description)} |" for r in found
    ]
    return "\n".join(lines)


def sections() -> list[tuple[str, type[BaseModel], FieldInfo]]:
    """The tables of the TOML file besides the top level: each section, then ``[[models]]``."""
    found: list[tuple[str, type[BaseModel], FieldInfo]] = []
    for name, field in fields_of(Settings):
        if _is_section(field.annotation):
            found.append((f"[{name}]", field.annotation, field))
    return [*found, ("[[models]]", ModelConfig, Settings.model_fields["models"])]


def render() -> str:
    env_prefix = str(Settings.model_config.get("env_prefix", ""))
    parts = [INTRO, "## Top level", "", _table(rows(Settings, env_prefix)), ""]
    for heading, model, field in sections():
        parts += [f"## `{heading}`", "", field.description or "", "", _table(rows(model, None)), ""]
    return "\n".join(parts)


def undocumented() -> list[str]:
    """Settings without a description, as ``section.name``: each must say what it does."""
    missing = [name for name, field in fields_of(Settings) if not field.description]
    for heading, model, _field in sections():
        missing += [f"{heading}.{name}" for name, field in fields_of(model) if not field.description]
    return missing
