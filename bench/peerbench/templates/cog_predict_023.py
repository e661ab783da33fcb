"""A no-op Cog runner for cog 0.23 served by coglet (the Rust HTTP server): returns its text (a template the
peer benchmark copies next to a cog.yaml)."""

from cog import BaseRunner, Input


class Runner(BaseRunner):
    def setup(self) -> None:
        pass

    def run(self, text: str = Input(description="Text to return.", default="x")) -> str:
        return text
