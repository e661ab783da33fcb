"""The Predictor interface a model implements, and the JSON-Schemas derived from its type hints.

A model is a class with ``setup()`` (called once per worker process) and ``predict(**inputs)`` whose
typed parameters (with pydantic ``Field`` constraints and defaults) become the model's ``input_schema``
and whose return annotation becomes its ``output_schema``::

    class Upper(BasePredictor):
        def predict(self, text: str = Field(description="Text to shout", max_length=1000)) -> str:
            return text.upper()
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from ..core.schema_marks import MEDIA_KEY, MODERATE_KEY, fields_marked, runtime_options, schema_mentions


class BasePredictor:
    """Subclass this and define ``predict`` with typed parameters (it is not declared here, so that each
    model's own signature type-checks)."""

    def setup(self) -> None:
        """Load weights and warm up. Runs once in each worker process before any prediction."""


def load_predictor_class(ref: str) -> type[BasePredictor]:
    """Import ``package.module:Class`` or ``path/to/file.py:Class``."""
    module_part, _, class_name = ref.rpartition(":")
    if module_part.endswith(".py"):
        path = Path(module_part).resolve()
        spec = importlib.util.spec_from_file_location(f"predictd_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(module_part)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not callable(getattr(cls, "predict", None)):
        raise ImportError(f"{ref} is not a predictor class with a predict() method")
    return cls


class _InputBase(BaseModel):
    # Unknown input fields are rejected, never silently dropped.
    model_config = ConfigDict(extra="forbid")


def input_model(cls: type[BasePredictor]) -> type[BaseModel]:
    """A pydantic model of predict()'s parameters: the single definition of the model's inputs."""
    predict = cls.predict  # type: ignore[attr-defined]
    signature = inspect.signature(predict)
    hints = get_type_hints(predict, include_extras=True)
    fields: dict[str, Any] = {}
    for name, param in signature.parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        annotation = hints.get(name, Any)
        default = param.default
        if default is inspect.Parameter.empty:
            fields[name] = (annotation, ...)
        elif isinstance(default, FieldInfo):
            fields[name] = (annotation, default)
        else:
            fields[name] = (annotation, default)
    return create_model(f"{cls.__name__}Input", __base__=_InputBase, **fields)


def output_adapter(cls: type[BasePredictor]) -> TypeAdapter[Any]:
    hints = get_type_hints(cls.predict, include_extras=True)  # type: ignore[attr-defined]
    return TypeAdapter(hints.get("return", Any))


def input_schema(cls: type[BasePredictor]) -> dict[str, Any]:
    """predict()'s parameters, plus the reserved options (moderation, output format) that apply."""
    schema = input_model(cls).model_json_schema()
    properties = schema.setdefault("properties", {})
    options = runtime_options(
        image_inputs=bool(fields_marked(schema, MEDIA_KEY, "image")),
        moderated_text=bool(fields_marked(schema, MODERATE_KEY, "text")),
        image_outputs=schema_mentions(output_schema(cls), MEDIA_KEY, "image"),
    )
    for name, prop in options.items():
        properties.setdefault(name, prop)
    schema["additionalProperties"] = False
    return schema


def output_schema(cls: type[BasePredictor]) -> dict[str, Any]:
    return output_adapter(cls).json_schema()
