"""The web console's pure parts: forms from input schemas, the usage chart, sessions, redirects, images."""

from __future__ import annotations

import ast
import json
import shlex
import time
from datetime import date, timedelta
from typing import Literal

import pytest
from pydantic import Field

from predictd.api.console import _images, _safe_next, bar_chart, form_fields
from predictd.api.sessions import ConsoleSessions
from predictd.api.snippets import MAX_INLINE_CHARS, no_snippets, snippets
from predictd.core.domain import Account, AccountStatus, Principal, utcnow
from predictd.runtime.predictor import BasePredictor, input_schema
from predictd.runtime.types import ImageInput, ImageOutput, Prompt


class Kitchen(BasePredictor):
    def predict(
        self,
        image: ImageInput,
        prompt: Prompt,
        mask: ImageInput | None = None,
        steps: int = Field(default=20, ge=1, le=50),
        strength: float = Field(default=0.5, ge=0.0, le=1.0),
        mode: Literal["fast", "best"] = "fast",
        seed: int | None = None,
        tags: list[str] | None = None,
        sharpen: bool = True,
    ) -> ImageOutput:
        raise NotImplementedError


def test_a_model_signature_becomes_a_form() -> None:
    schema = input_schema(Kitchen)  # the schema the server publishes for the model
    fields = {f.name: f for f in form_fields(schema)}
    assert [f.name for f in form_fields(schema)][:2] == ["image", "prompt"]  # required ones first
    assert (fields["image"].kind, fields["image"].required) == ("image", True)
    assert (fields["mask"].kind, fields["mask"].required) == ("image", False)  # optional image: anyOf null
    assert fields["prompt"].kind == "textarea"
    steps = fields["steps"]
    assert (steps.kind, steps.minimum, steps.maximum, steps.default) == ("integer", 1, 50, 20)
    assert (fields["strength"].kind, fields["strength"].maximum) == ("number", 1.0)
    assert fields["mode"].kind == "enum"
    assert fields["mode"].options == [('"fast"', "fast"), ('"best"', "best")]
    assert fields["seed"].kind == "integer"
    assert fields["tags"].kind == "json"
    assert (fields["sharpen"].kind, fields["sharpen"].default) == ("boolean", True)
    assert fields["output_format"].options == [('"png"', "png"), ('"jpeg"', "jpeg")]


def test_enums_by_reference_and_constants_become_selects() -> None:
    schema = {
        "type": "object",
        "$defs": {"Size": {"enum": [256, 512], "type": "integer"}},
        "properties": {"size": {"$ref": "#/$defs/Size"}, "version": {"const": "v2"}},
        "required": ["size"],
    }
    fields = {f.name: f for f in form_fields(schema)}
    assert fields["size"].options == [("256", "256"), ("512", "512")]
    assert fields["size"].required
    assert fields["version"].options == [('"v2"', "v2")]
    assert form_fields(None) == []


def test_the_usage_chart_scales_to_a_round_maximum() -> None:
    days = [date(2026, 3, 1) + timedelta(days=i) for i in range(14)]
    values = [0.0] * 13 + [3.0]
    chart = bar_chart("Predictions per day", "predictions", days, values)
    assert len(chart.bars) == 14
    assert chart.top == "5"
    assert chart.total == "3"
    last = chart.bars[-1]
    assert (last.day, last.value, last.label) == ("2026-03-14", "3", "03-14")
    assert last.height == pytest.approx((chart.baseline - 10) * 3 / 5, abs=0.1)
    assert last.y + last.height == pytest.approx(chart.baseline, abs=0.1)
    assert [b.height for b in chart.bars[:13]] == [0.0] * 13
    assert [b.label != "" for b in chart.bars] == [i % 2 == 1 for i in range(14)]
    empty = bar_chart("Credits", "credits", days, [0.0] * 14)
    assert (empty.top, empty.total) == ("1", "0")
    assert bar_chart("x", "x", days, [0.0] * 13 + [0.25]).top == "0.5"
    assert bar_chart("x", "x", days, [0.0] * 13 + [1200.0]).top == "2000"


def principal(key_id: str) -> Principal:
    return Principal(Account("acc_1", "acme", AccountStatus.ACTIVE, utcnow()), key_id=key_id)


async def test_sessions_expire_end_with_their_key_and_are_bounded() -> None:
    sessions = ConsoleSessions(ttl_s=0.2, per_account=3, max_sessions=3)
    token, session = await sessions.open(principal("key_a"), "d" * 64)
    assert await sessions.get(token) is session
    assert await sessions.get(token + "x") is None
    assert await sessions.get(None) is None
    assert session.csrf_token != token
    other, _ = await sessions.open(principal("key_b"), "e" * 64)
    assert await sessions.close_key("key_a") == 1
    assert await sessions.get(token) is None
    assert await sessions.get(other) is not None
    time.sleep(0.25)
    assert await sessions.get(other) is None

    sessions = ConsoleSessions(ttl_s=60, per_account=10, max_sessions=3)
    tokens = [(await sessions.open(principal(f"key_{i}"), "f" * 64))[0] for i in range(5)]
    assert len(sessions) == 3
    assert [await sessions.get(t) is not None for t in tokens] == [False, False, True, True, True]
    await sessions.close(tokens[-1])
    assert await sessions.get(tokens[-1]) is None


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/keys", "/console/keys"),
        ("/console/predictions?model=echo", "/console/predictions?model=echo"),
        (None, "/console/predictions"),
        ("https://evil.example/console/", "/console/predictions"),
        ("//evil.example", "/console/predictions"),
        ("/console//evil.example", "/console/predictions"),
        ("/console/\\evil.example", "/console/predictions"),
        ("/v1/account", "/console/predictions"),
    ],
)
def test_only_console_paths_are_followed_after_sign_in(target: str | None, expected: str) -> None:
    assert _safe_next(target) == expected


def test_only_this_servers_outputs_and_raster_data_uris_are_shown_as_images() -> None:
    base = "http://127.0.0.1:8000/"
    output = {
        "thumbnail": f"{base}v1/outputs/abc.png",
        "others": [
            "data:image/png;base64,AAAA",
            "data:image/svg+xml;base64,PHN2Zz4=",
            "https://elsewhere.example/x.png",
            "javascript:alert(1)",
            f"{base}v1/predictions/x",
        ],
        "width": 64,
    }
    assert list(_images(output, base)) == [f"{base}v1/outputs/abc.png", "data:image/png;base64,AAAA"]


RUN_INPUT = {
    "text": 'it\'s "quoted" $HOME `date` \\ ünïcode',
    "steps": 20,
    "strength": 0.5,
    "sharpen": False,
    "seed": None,
    "tags": ["a", {"b": [1, 2.5]}],
}


def _python_call(code: str) -> tuple[str, object]:
    """The model and input of the snippet's ``client.run(model, input)``, read as Python reads them."""
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run":
            model, given = node.args
            return ast.literal_eval(model), ast.literal_eval(given)
    raise AssertionError("no client.run(...) call")


def test_each_snippet_sends_the_runs_model_and_input_and_reads_the_key_from_the_environment() -> None:
    by_language = {s.language: s for s in snippets("http://127.0.0.1:8000/", "kitchen", RUN_INPUT)}
    assert [s.language for s in no_snippets()] == list(by_language) == ["curl", "python", "javascript"]
    assert [s.label for s in no_snippets()] == [s.label for s in by_language.values()]

    curl = by_language["curl"].code
    command, _, rest = curl.partition("<<'JSON'\n")
    body, _, end = rest.rpartition("\nJSON\n")
    assert end == ""
    assert json.loads(body) == {"model": "kitchen", "input": RUN_INPUT, "await": True}
    assert shlex.split(command.replace("\\\n", " "))[:5] == [
        "curl",
        "-sS",
        "-X",
        "POST",
        "http://127.0.0.1:8000/v1/predictions",
    ]
    assert 'Bearer $PREDICTD_API_KEY"' in command

    python = by_language["python"].code
    assert _python_call(python) == ("kitchen", RUN_INPUT)
    assert 'predictd.Client(os.environ["PREDICTD_API_KEY"], base_url="http://127.0.0.1:8000")' in python

    javascript = by_language["javascript"].code
    start = javascript.index("input: ") + len("input: ")
    assert json.JSONDecoder().raw_decode(javascript, start)[0] == RUN_INPUT
    assert 'model: "kitchen"' in javascript
    assert "`Bearer ${process.env.PREDICTD_API_KEY}`" in javascript


def test_a_very_long_input_is_left_out_and_the_snippet_says_so() -> None:
    image = "data:image/png;base64," + "A" * MAX_INLINE_CHARS
    given = {"image": image, "masks": ["short", "x" * (MAX_INLINE_CHARS + 1)], "size": 8}
    for snippet in snippets("http://127.0.0.1:8000/", "thumbnail", given):
        assert image not in snippet.code
        assert "<your image>" in snippet.code
        assert "<your masks[1]>" in snippet.code
        assert "input.image: this run's 4,118-character data URI is left out" in snippet.code
        assert "input.masks[1]: this run's 4,097-character value is left out" in snippet.code
        assert "short" in snippet.code
    python = snippets("http://127.0.0.1:8000/", "thumbnail", given)[1].code
    assert _python_call(python)[1] == {
        "image": "<your image>",
        "masks": ["short", "<your masks[1]>"],
        "size": 8,
    }


def test_a_hostile_host_name_stays_one_quoted_word_in_the_shell() -> None:
    curl = snippets("http://evil$(touch /tmp/x)`id`/", "echo", {"text": "x"})[0].code
    assert (
        shlex.split(curl.splitlines()[0].removesuffix("\\"))[4]
        == "http://evil$(touch /tmp/x)`id`/v1/predictions"
    )
