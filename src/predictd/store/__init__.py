"""Persistence: one SQLAlchemy Core schema served by SQLite (embedded) and PostgreSQL (scaled out)."""

from .sql import SqlStore, open_store

__all__ = ["SqlStore", "open_store"]
