"""The public classes' shape, written once for both clients: a client's constructor and settings, and each
method bound to its plan in :mod:`._base`.

A method is an ``operation`` (or an ``iteration``, for ``list`` and ``stream``) on a base class here; the
sync and async modules subclass these bases with ``SyncAPI`` or ``AsyncAPI`` and supply the driver that
performs the plans' effects. Calling the method builds the plan and hands it to that driver, so a sync
method returns the result and an async one returns a coroutine of it; type checkers see each signature, and
``help()`` the plan's documentation.
"""

from __future__ import annotations

import functools
import inspect
import types
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Coroutine, Generator, Mapping
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

import httpx

from ._base import (
    DEFAULT_MAX_RETRIES,
    ClientPlans,
    ModelPlans,
    PredictionPlans,
    Session,
    make_settings,
)
from ._effects import Emits, Plan

P = ParamSpec("P")
R = TypeVar("R")
E = TypeVar("E")
PlansT = TypeVar("PlansT")  # the plans object (of ._base) that an operation is a method of
HttpT = TypeVar("HttpT", httpx.Client, httpx.AsyncClient)


class SyncAPI:
    """A public object of ``predictd.Client``: its methods return their results."""


class AsyncAPI:
    """A public object of ``predictd.AsyncClient``: its methods return coroutines."""


class operation(Generic[PlansT, P, R]):
    """A public method that runs one plan and returns its result."""

    def __init__(self, plan: Callable[Concatenate[PlansT, P], Plan[R]]) -> None:
        self._plan = plan
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncAPI, owner: type[Any]) -> Callable[P, R]: ...
    @overload
    def __get__(self, obj: AsyncAPI, owner: type[Any]) -> Callable[P, Coroutine[Any, Any, R]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        return self if obj is None else _method(self._plan, obj._plans, obj._driver._bind)


class iteration(Generic[PlansT, P, E]):
    """A public method that runs one plan and iterates over what it hands out."""

    def __init__(self, plan: Callable[Concatenate[PlansT, P], Emits[E]]) -> None:
        self._plan = plan
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: SyncAPI, owner: type[Any]) -> Callable[P, Generator[E, None, None]]: ...
    @overload
    def __get__(self, obj: AsyncAPI, owner: type[Any]) -> Callable[P, AsyncGenerator[E, None]]: ...
    def __get__(self, obj: Any, owner: type[Any]) -> Any:
        return self if obj is None else _method(self._plan, obj._plans, obj._driver._bind_iter)


def _method(plan: Callable[..., Any], plans: object, bind: Callable[[Callable[..., Any]], Any]) -> Any:
    """What ``bind`` makes of the plan (a method of ``plans``): named and documented as the plan is, with
    its parameters, but not its return annotation (the driver returns a result, a coroutine or an iterator,
    never the plan)."""
    made = types.MethodType(plan, plans)
    method = functools.update_wrapper(bind(made), made)
    signature = inspect.signature(made).replace(return_annotation=inspect.Signature.empty)
    method.__signature__ = signature  # type: ignore[attr-defined]
    return method


class BaseClient(ABC, Generic[HttpT]):
    """What Client and AsyncClient share: how they are made, their settings, their own operations.

    ``http_client`` is an httpx client to use (and leave open) instead of one of the client's own.
    """

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        poll_interval: float = 0.25,
        max_poll_interval: float = 2.0,
        headers: Mapping[str, str] | None = None,
        http_client: HttpT | None = None,
    ) -> None:
        self._settings = make_settings(
            api_key, base_url, timeout, max_retries, poll_interval, max_poll_interval, headers
        )
        self._owns_http = http_client is None
        self._http: HttpT = self._open_pool(self._settings.timeout) if http_client is None else http_client
        self._plans = ClientPlans(Session(self._settings))
        self._driver: BaseClient[HttpT] = self  # what runs the operations: the client, for its resources too
        self._attach_resources()

    @property
    def base_url(self) -> str:
        return self._settings.base_url

    @property
    def api_key(self) -> str | None:
        return self._settings.api_key

    @property
    def max_retries(self) -> int:
        return self._settings.max_retries

    @property
    def timeout(self) -> httpx.Timeout:
        return self._settings.timeout

    def with_options(
        self,
        *,
        timeout: float | httpx.Timeout | None = None,
        max_retries: int | None = None,
        poll_interval: float | None = None,
    ) -> Self:
        """A client with some settings changed, sharing this one's connection pool."""
        s = self._settings
        return type(self)(
            s.api_key,
            base_url=s.base_url,
            timeout=timeout if timeout is not None else s.timeout,
            max_retries=max_retries if max_retries is not None else s.max_retries,
            poll_interval=poll_interval if poll_interval is not None else s.poll_interval,
            max_poll_interval=s.max_poll_interval,
            headers=s.headers,
            http_client=self._http,
        )

    run = operation(ClientPlans.run)
    account = operation(ClientPlans.account)
    credits = operation(ClientPlans.credits)

    # -- what each driver supplies ---------------------------------------------------------------------------

    @abstractmethod
    def _attach_resources(self) -> None:
        """Sets ``predictions`` and ``models``, of this client's own kind."""

    @abstractmethod
    def _open_pool(self, timeout: httpx.Timeout) -> HttpT:
        """The httpx client to use when none was given."""

    @abstractmethod
    def _bind(self, plan: Callable[P, Plan[R]]) -> Callable[P, Any]:
        """A function that makes the plan with its arguments and runs it to its result."""

    @abstractmethod
    def _bind_iter(self, plan: Callable[P, Emits[E]]) -> Callable[P, Any]:
        """A function that makes the plan with its arguments and iterates over what it hands out."""


class BasePredictions:
    """``client.predictions``."""

    def __init__(self, client: BaseClient[Any]) -> None:
        self._driver = client
        self._plans: PredictionPlans = client._plans.predictions

    create = operation(PredictionPlans.create)
    get = operation(PredictionPlans.get)
    cancel = operation(PredictionPlans.cancel)
    delete = operation(PredictionPlans.delete)
    list_page = operation(PredictionPlans.list_page)
    wait = operation(PredictionPlans.wait)
    stream = iteration(PredictionPlans.stream)
    list = iteration(PredictionPlans.list)


class BaseModels:
    """``client.models``."""

    def __init__(self, client: BaseClient[Any]) -> None:
        self._driver = client
        self._plans: ModelPlans = client._plans.models

    get = operation(ModelPlans.get)
    list = operation(ModelPlans.list)
