"""The JSON of predictions' status reads, kept as bytes while the prediction is unchanged, within a byte
budget (``[cache] max_bytes``); one per app, reported as ``predictd_cache_bytes{cache="status_bodies"}``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..core.bounded import BytesBounded
from ..core.domain import Prediction

Render = Callable[[Prediction, str], dict[str, Any]]

# Bodies kept at most, whatever their size.
MAX_BODIES = 4096


class RenderedBodies:
    """The JSON of each prediction's latest rendering, reused while the store hands out the same
    ``Prediction`` object for it: the SQLite store keeps returning one object until the row changes, and a
    changed row is always a new object. Holding the object itself (compared with ``is``) makes the check
    exact. Polling clients read the same unchanged prediction many times over.

    Each body is weighed by its length: past ``max_bytes`` the oldest go, and a body longer than an eighth
    of it is rendered anew for each read rather than kept (see ``BytesBounded``)."""

    def __init__(self, max_bytes: int, max_bodies: int = MAX_BODIES) -> None:
        self._bodies: BytesBounded[str, tuple[Prediction, str, Render, bytes]] = BytesBounded(
            max_bytes, max_bodies
        )

    @property
    def held_bytes(self) -> int:
        return self._bodies.held_bytes

    def json(self, prediction: Prediction, base_url: str, render: Render) -> bytes:
        found = self._bodies.rows.get(prediction.id)
        if found is not None and found[0] is prediction and found[1] == base_url and found[2] is render:
            return found[3]
        body = orjson.dumps(render(prediction, base_url), option=orjson.OPT_NON_STR_KEYS)
        self._bodies.put(prediction.id, (prediction, base_url, render, body), len(body))
        return body
