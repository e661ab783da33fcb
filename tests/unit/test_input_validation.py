"""The fast acceptance of inputs (jsonschema-rs) says yes exactly when jsonschema does, on the schema of every
built-in and fixture model it is used for; a schema it may disagree on is left to jsonschema alone."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from predictd.config import BUILTIN_MODELS
from predictd.runtime.predictor import input_schema, load_predictor_class
from predictd.validation import InputRules

FIXTURES = ["Thumbnail", "Caption", "Crash", "Raises", "Upstream", "Measure", "Slow"]
REFS = {m["slug"]: m["ref"] for m in BUILTIN_MODELS} | {f: f"tests.fixtures.models:{f}" for f in FIXTURES}
RULES = {name: InputRules.of(input_schema(load_predictor_class(ref))) for name, ref in REFS.items()}
FAST = sorted(name for name, rules in RULES.items() if rules.accepts is not None)

ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)


def near(prop: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the declared type around the schema's bounds, and sometimes anything at all."""
    if "anyOf" in prop:
        return st.one_of([near(p) for p in prop["anyOf"]])
    if "enum" in prop:
        return st.sampled_from(prop["enum"]) | ANY_JSON
    kind = prop.get("type")
    if kind == "integer" or kind == "number":
        low, high = prop.get("minimum"), prop.get("maximum")
        edges = [v + d for v in (low, high) if v is not None for d in (-1, -0.5, 0, 0.5, 1)]
        numbers = st.integers() | st.floats(allow_nan=False) | st.sampled_from(edges or [0])
        return numbers | ANY_JSON
    if kind == "string":
        limit = prop.get("maxLength")
        around = (
            st.integers(max(0, limit - 1), limit + 1).map(lambda n: "é" * n)
            if limit and limit < 100
            else st.nothing()
        )
        return st.text(max_size=20) | around | ANY_JSON
    if kind == "boolean":
        return st.booleans() | ANY_JSON
    return ANY_JSON


def inputs(rules: InputRules) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Any] = rules.schema["properties"]
    known = st.fixed_dictionaries({}, optional={name: near(prop) for name, prop in properties.items()})
    unknown = st.dictionaries(st.text(max_size=5), ANY_JSON, max_size=1)
    return st.tuples(known, unknown).map(lambda parts: {**parts[1], **parts[0]})


def test_most_models_are_checked_fast() -> None:
    assert {"echo", "sleep", "ocr", "text-embed", "Caption", "Thumbnail"} <= set(FAST)


@pytest.mark.parametrize("name", FAST)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_fast_acceptance_agrees_with_jsonschema(name: str, data: st.DataObject) -> None:
    rules = RULES[name]
    value = data.draw(inputs(rules))
    assert rules.accepts is not None
    assert rules.accepts(value) == rules.validator.is_valid(value), value


def test_a_schema_with_a_regular_expression_is_left_to_jsonschema() -> None:
    """Rust's and Python's regular expressions differ; ``background-change`` has a colour pattern."""
    assert RULES["background-change"].accepts is None
    schema = {"type": "object", "properties": {"c": {"type": "string", "pattern": "^#[0-9a-f]{6}$"}}}
    assert InputRules.of(schema).accepts is None
    nested = {"type": "object", "properties": {"c": {"anyOf": [{"type": "string", "pattern": "x"}]}}}
    assert InputRules.of(nested).accepts is None
