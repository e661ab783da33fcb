"""``sleep``: waits ``ms`` milliseconds. For timing, queueing and cancellation."""

import time

from pydantic import Field

from ..runtime.predictor import BasePredictor


class Sleep(BasePredictor):
    def predict(
        self, ms: int = Field(default=100, ge=0, le=3_600_000, description="Milliseconds to sleep.")
    ) -> str:
        time.sleep(ms / 1000)
        return f"slept {ms} ms"
