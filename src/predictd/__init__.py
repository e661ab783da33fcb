"""predictd: a self-hostable prediction API server."""

__version__ = "0.1.0"
