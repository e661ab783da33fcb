"""Persistence: one SQLAlchemy Core schema served by SQLite (embedded) and PostgreSQL (scaled out), with a
store per aggregate (accounts.py, predictions.py, deliveries.py) and their rules in one module (rules.py)."""

from .database import Database, open_database
from .failures import contention, unstorable

__all__ = ["Database", "contention", "open_database", "unstorable"]
