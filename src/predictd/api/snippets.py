"""Code that runs a prediction again: its model and input sent with curl, the Python SDK (``predictd.Client``)
or JavaScript's ``fetch``, as the web console shows beside a run.

The key is never written into the code: each snippet reads it from ``$PREDICTD_API_KEY``. A very long input
value (an uploaded image's data URI) is left out, and the snippet says where to put one's own.
"""

from __future__ import annotations

import json
import pprint
import shlex
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

KEY_VARIABLE = "PREDICTD_API_KEY"
# Longer input strings are left out: a page would carry a megabyte data URI three more times.
MAX_INLINE_CHARS = 4096


@dataclass(frozen=True, slots=True)
class Snippet:
    language: str  # an id: curl | python | javascript
    label: str
    code: str


def snippets(base_url: str, model: str, input: dict[str, Any]) -> list[Snippet]:
    """One snippet per language that creates a prediction of ``model`` with ``input`` on the server at
    ``base_url`` (ending in ``/``), waits for it, and prints what the server answers."""
    inline, left_out = _inline(input, "input")
    root = base_url.rstrip("/")
    return [
        Snippet(language, label, write(root, model, inline, left_out))
        for language, (label, write) in _WRITERS.items()
    ]


def no_snippets() -> list[Snippet]:
    """The languages with no code yet (the playground's, until a run)."""
    return [Snippet(language, label, "") for language, (label, _) in _WRITERS.items()]


def _inline(value: Any, path: str) -> tuple[Any, list[str]]:
    """``value`` with every string longer than MAX_INLINE_CHARS replaced by a placeholder; and a note for
    each one left out."""
    if isinstance(value, str) and len(value) > MAX_INLINE_CHARS:
        kind = "data URI" if value.startswith("data:") else "value"
        return f"<your {path.rsplit('.', 1)[-1]}>", [
            f"{path}: this run's {len(value):,}-character {kind} is left out; put yours in its place"
        ]
    if isinstance(value, dict):
        notes: list[str] = []
        out = {}
        for key, item in value.items():
            out[key], found = _inline(item, f"{path}.{key}")
            notes += found
        return out, notes
    if isinstance(value, list):
        notes = []
        items = []
        for index, item in enumerate(value):
            inlined, found = _inline(item, f"{path}[{index}]")
            items.append(inlined)
            notes += found
        return items, notes
    return value, []


def _comments(prefix: str, notes: list[str]) -> str:
    return "".join(f"{prefix} {note}\n" for note in notes)


def _curl(root: str, model: str, input: Any, notes: list[str]) -> str:
    body = json.dumps({"model": model, "input": input, "await": True}, indent=2, ensure_ascii=False)
    # A quoted here-document: the shell expands nothing in the JSON, whatever quotes the input holds.
    return (
        _comments("#", notes)
        + f"curl -sS -X POST {shlex.quote(root + '/v1/predictions')} \\\n"
        + f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        + '  -H "Content-Type: application/json" \\\n'
        + "  --data-binary @- <<'JSON'\n"
        + f"{body}\nJSON\n"
    )


def _python(root: str, model: str, input: Any, notes: list[str]) -> str:
    literal = pprint.pformat(input, indent=1, width=88, sort_dicts=False)
    return (
        "import os\n\nimport predictd\n\n"
        + _comments("#", notes)
        + f'with predictd.Client(os.environ["{KEY_VARIABLE}"], base_url={json.dumps(root)}) as client:\n'
        + "    prediction = client.run(\n"
        + f"        {json.dumps(model)},\n"
        + textwrap.indent(literal, " " * 8)
        + ",\n    )\n"
        + '    print(prediction["output"])\n'
    )


def _javascript(root: str, model: str, input: Any, notes: list[str]) -> str:
    literal = json.dumps(input, indent=2, ensure_ascii=False)
    indented = textwrap.indent(literal, "    ").lstrip()
    return (
        _comments("//", notes)
        + f"const response = await fetch({json.dumps(root + '/v1/predictions')}, {{\n"
        + '  method: "POST",\n'
        + "  headers: {\n"
        + f"    Authorization: `Bearer ${{process.env.{KEY_VARIABLE}}}`,\n"
        + '    "Content-Type": "application/json",\n'
        + "  },\n"
        + "  body: JSON.stringify({\n"
        + f"    model: {json.dumps(model)},\n"
        + f"    input: {indented},\n"
        + "    await: true,\n"
        + "  }),\n"
        + "});\n"
        + "console.log(await response.json());\n"
    )


_WRITERS: dict[str, tuple[str, Callable[[str, str, Any, list[str]], str]]] = {
    "curl": ("curl", _curl),
    "python": ("Python", _python),
    "javascript": ("JavaScript", _javascript),
}
