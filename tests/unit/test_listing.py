"""Which inputs and outputs a list of predictions leaves out (api/listing.py)."""

from __future__ import annotations

from typing import Any

from predictd.api.listing import elided_list


def body(text: str | None, output: Any = None) -> dict[str, Any]:
    return {"id": "p", "input": None if text is None else {"text": text}, "output": output}


def test_a_field_longer_than_its_limit_is_elided_and_marked() -> None:
    small, large = body("a" * 10, "ok"), body("a" * 200, "b" * 200)
    listed = elided_list([small, large], field_max_bytes=100, max_bytes=10_000)
    assert listed[0] == {**body("a" * 10, "ok"), "input_elided": False, "output_elided": False}
    elided = {"input": None, "output": None, "input_elided": True, "output_elided": True}
    assert listed[1] == {"id": "p", **elided}


def test_fields_past_the_page_budget_are_elided_in_list_order() -> None:
    bodies = [body("a" * 40) for _ in range(4)]  # {"text":"aaa…"}: 51 bytes each
    listed = elided_list(bodies, field_max_bytes=100, max_bytes=120)
    assert [item["input_elided"] for item in listed] == [False, False, True, True]


def test_a_missing_output_is_not_marked_elided() -> None:
    listed = elided_list([body(None)], field_max_bytes=0, max_bytes=0)
    assert listed[0]["input_elided"] is False
    assert listed[0]["output_elided"] is False
