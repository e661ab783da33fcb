"""Running models: the Predictor interface, worker subprocesses and their supervision."""

from .predictor import BasePredictor

__all__ = ["BasePredictor"]
