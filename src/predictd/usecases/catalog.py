"""Which models a caller can ask for: the deployment's catalog, as the API shows it."""

from __future__ import annotations

from ..core.domain import ModelInfo
from ..core.ports import ModelCatalog
from ..errors import ApiError, ErrorId


class Models:
    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    def list(self) -> list[ModelInfo]:
        return list(self._catalog.list())

    def get(self, slug: str) -> ModelInfo:
        info = self._catalog.get(slug)
        if info is None:
            raise ApiError(ErrorId.MODEL_NOT_FOUND, f"The model with slug {slug!r} does not exist.")
        return info
