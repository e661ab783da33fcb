"""A no-op Cog predictor for cog 0.16 (Python HTTP server): returns its text (a template the peer benchmark
copies next to a cog.yaml)."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def setup(self) -> None:
        pass

    def predict(self, text: str = Input(description="Text to return.", default="x")) -> str:
        return text
