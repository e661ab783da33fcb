"""predictd: a self-hostable prediction API server, and its Python client (``predictd.Client``).

The client classes are imported on first use, so that ``import predictd`` stays light for the server's
worker processes and for the CLI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .sdk import APIError, AsyncClient, Client, PredictionFailed

_LAZY = frozenset({"Client", "AsyncClient", "APIError", "PredictionFailed"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import sdk

        return getattr(sdk, name)
    raise AttributeError(f"module 'predictd' has no attribute {name!r}")


__all__ = ["APIError", "AsyncClient", "Client", "PredictionFailed", "__version__"]
