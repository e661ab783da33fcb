"""What the SDK's core asks its drivers to do: the only I/O there is.

Every operation is a plan (a generator, see :mod:`._base`) that yields these effects and gets back what the
driver answers. The sync client performs them with ``httpx.Client`` and ``time.sleep``, the async client
with ``httpx.AsyncClient`` and ``asyncio.sleep``; neither decides anything else. A failed send or read is
answered with its ``httpx.TransportError`` rather than raised, so that the plan decides what it means.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from typing import Generic, TypeAlias, TypeVar

import httpx

E = TypeVar("E")
R = TypeVar("R")


@dataclass(frozen=True)
class Request:
    """One HTTP request as the core built it; sent unchanged on each of its retries."""

    method: str
    base_url: str
    path: str
    headers: Mapping[str, str]
    timeout: httpx.Timeout
    params: Mapping[str, str] | None = None
    content: bytes | None = None

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        """httpx's request, with what ``http`` adds to each of its requests (its own headers, cookies...)."""
        return http.build_request(
            self.method,
            self.url,
            params=self.params,
            headers=self.headers,
            content=self.content,
            timeout=self.timeout,
        )


@dataclass(frozen=True)
class Send:
    """Send ``request``. Answer: its ``httpx.Response`` (the body read, unless ``stream``) or the
    ``httpx.TransportError``. A streamed response stays open until Close or until the plan ends."""

    request: Request
    stream: bool = False


@dataclass(frozen=True)
class Read:
    """Read the rest of a streamed response's body. Answer: None or the ``httpx.TransportError``."""

    response: httpx.Response


@dataclass(frozen=True)
class NextLine:
    """The next line of a streamed response's body. Answer: the line, None at its end, or the
    ``httpx.TransportError``."""

    response: httpx.Response


@dataclass(frozen=True)
class Close:
    """Close a streamed response. Answer: None."""

    response: httpx.Response


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds``. Answer: None."""

    seconds: float


@dataclass(frozen=True)
class Emit(Generic[E]):
    """Hand ``value`` to the caller iterating the operation (``predictions.list``, ``predictions.stream``).
    Answer: None."""

    value: E


IO: TypeAlias = Send | Read | NextLine | Close | Sleep
#: An operation that ends with a result of type R.
Plan: TypeAlias = Generator[IO, object, R]
#: An operation that hands values of type E to its caller, one at a time.
Emits: TypeAlias = Generator[IO | Emit[E], object, None]


class Steps(Generic[E, R]):
    """A plan as a driver steps through it: iterating gives the effects it asks for, in order; the driver
    puts what each one gave in ``answer`` before taking the next. ``result`` is the plan's return value."""

    def __init__(self, plan: Generator[IO | Emit[E], object, R]) -> None:
        self._plan = plan
        self.answer: object = None
        self.result: R

    def __iter__(self) -> Iterator[IO | Emit[E]]:
        try:
            effect = next(self._plan)
            while True:
                self.answer = None
                yield effect
                effect = self._plan.send(self.answer)
        except StopIteration as done:
            self.result = done.value
        finally:
            self._plan.close()


def sent(answer: object) -> httpx.Response | httpx.TransportError:
    """A Send's answer, checked."""
    if not isinstance(answer, httpx.Response | httpx.TransportError):
        raise TypeError(f"a Send was answered with {answer!r}")
    return answer


def failure(answer: object) -> httpx.TransportError | None:
    """The transport error a Read or NextLine was answered with, if any."""
    return answer if isinstance(answer, httpx.TransportError) else None
