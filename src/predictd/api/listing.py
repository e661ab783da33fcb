"""Lists of predictions kept to a few megabytes: a prediction's ``input`` or ``output`` too large for a list
is left out of it (elided), marked, and fetched whole through the prediction's own ``urls.get``.

A page of 50 predictions with inputs of 4 MB each was a 200 MB answer; with the defaults
(``[lists]``: 64 KiB a field, 2 MiB of inputs and outputs a page) one page stays under about 3 MB."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

# The prediction's fields a list may leave out; each gets a "<field>_elided" flag in every list item.
ELIDABLE = ("input", "output")


def elided_list(
    bodies: Iterable[dict[str, Any]], field_max_bytes: int, max_bytes: int
) -> list[dict[str, Any]]:
    """``bodies`` (prediction bodies, in list order) with each input and output whose JSON is longer than
    ``field_max_bytes``, or than what is left of ``max_bytes`` for the whole list, replaced by ``None`` and
    flagged ``<field>_elided: true``. A field already ``None`` (not produced yet, or data removed) is not
    elided."""
    left = max_bytes
    out = []
    for body in bodies:
        for field in ELIDABLE:
            value = body[field]
            size = 0 if value is None else len(orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS))
            elide = size > min(field_max_bytes, left)
            if elide:
                body[field] = None
            else:
                left -= size
            body[f"{field}_elided"] = elide
        out.append(body)
    return out
