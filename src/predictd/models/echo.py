"""``echo``: returns its text unchanged. The no-op model for tests and benchmarks."""

from pydantic import Field

from ..runtime.predictor import BasePredictor


class Echo(BasePredictor):
    def predict(self, text: str = Field(description="Text to return.", max_length=1_000_000)) -> str:
        return text
