"""The size of a request's head (request line and headers), counted as its bytes arrive, before the HTTP
parser keeps any of them: the parser itself has no limit, and appends a header's pieces to each other until
its line ends (a 300 MB header was once read whole).

A read that cannot pass a limit whatever its lines, a few hundred bytes that usually hold a whole head, goes
to the parser at once, after two comparisons; only when the head goes on in a later read is the read looked
into. A read that might pass a limit is taken a line at a time instead (``take``), so that each line is
measured against its own limit and the body that may follow the head in the same read is never mistaken for
a header. The number of headers is the parser's to count (``too_many_headers``): it keeps them in a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...config.settings import HttpSettings
from ...errors import ApiError, ErrorId

_HEADER_NAME = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


def too_many_headers(limit: int) -> ApiError:
    return ApiError(
        ErrorId.REQUEST_HEADERS_TOO_LARGE,
        f"The request has more than this deployment's limit of {limit} headers.",
    )


@dataclass(frozen=True, slots=True)
class Oversize:
    """A limit the head would pass: the error to answer, and how many of the offered bytes still fit."""

    error_id: ErrorId
    message: str
    fits: int

    def error(self) -> ApiError:
        return ApiError(self.error_id, self.message)


class HeadMeter:
    """One connection's count of the head being received; ``reset`` at each request's first byte."""

    __slots__ = (
        "_last",
        "_max_bytes",
        "_max_header_line",
        "_max_request_line",
        "_shortest_line",
        "bytes",
        "line",
        "on_request_line",
    )

    def __init__(self, settings: HttpSettings) -> None:
        self._max_bytes = settings.max_head_bytes
        self._max_request_line = settings.max_request_line_bytes
        self._max_header_line = settings.max_header_bytes
        self._shortest_line = min(self._max_request_line, self._max_header_line)
        self.bytes = 0  # of the head so far
        self.line = 0  # of its current, unfinished line
        self.on_request_line = True
        self._last = b""  # the latest bytes counted in, where the current line may have begun

    def reset(self) -> None:
        self.bytes = self.line = 0
        self.on_request_line = True

    def fits(self, size: int) -> bool:
        """Whether ``size`` more bytes pass no limit, whatever lines they hold: no line of them can be
        longer than the current line plus all of them."""
        return self.line + size <= self._shortest_line and self.bytes + size <= self._max_bytes

    def count_in(self, data: bytes) -> None:
        """Count in a read that ``fits``, once the parser took it and the head goes on in a later one."""
        self.bytes += len(data)
        self._last = data
        newline = data.rfind(b"\n")
        if newline < 0:
            self.line += len(data)
        else:
            self.line = len(data) - 1 - newline
            self.on_request_line = False

    def take(self, segment: bytes, ends_line: bool) -> Oversize | None:
        """Count in ``segment``, the next bytes of the current line (its end included when ``ends_line``),
        or say which limit it would pass."""
        limit = self._max_request_line if self.on_request_line else self._max_header_line
        line = self.line + len(segment)
        total = self.bytes + len(segment)
        if line > limit or total > self._max_bytes:
            fits = max(0, min(limit - self.line, self._max_bytes - self.bytes))
            if line <= limit:
                message = f"The request's headers exceed this deployment's {self._max_bytes} byte limit."
                return Oversize(ErrorId.REQUEST_HEADERS_TOO_LARGE, message, fits)
            if self.on_request_line:
                message = f"The request line is longer than this deployment's {limit} byte limit."
                return Oversize(ErrorId.URI_TOO_LONG, message, fits)
            message = f"{self._header_named(segment)} is longer than this deployment's {limit} byte limit."
            return Oversize(ErrorId.REQUEST_HEADERS_TOO_LARGE, message, fits)
        if ends_line:
            self.line = 0
            self.on_request_line = False
        else:
            self.line = line
            self._last = segment
        self.bytes = total
        return None

    def _header_named(self, segment: bytes) -> str:
        """'The header <name>' when the current line's start is still at hand, else 'A header line'."""
        if self.line == 0:
            start = segment
        elif self.line <= len(self._last):
            start = self._last[len(self._last) - self.line :]
        else:
            return "A header line"
        found = _HEADER_NAME.match(start)
        if found is None or start[found.end() : found.end() + 1] not in (b":", b""):
            return "A header line"
        return f"The header '{found.group().decode('ascii').lower()}'"
