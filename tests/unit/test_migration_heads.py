"""The store skips Alembic when a database is at the head it reads from the version files itself."""

from __future__ import annotations

from alembic.script import ScriptDirectory

from predictd.store.migrate import alembic_config, head_revisions


def test_heads_read_without_alembic_are_alembics_heads() -> None:
    assert head_revisions() == frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())
