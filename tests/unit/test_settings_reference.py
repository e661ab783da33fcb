"""docs/settings.md documents every setting as the settings object defines it, and says what each does."""

from __future__ import annotations

from pathlib import Path

from predictd.config.reference import render, undocumented

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "settings.md"


def test_the_settings_reference_is_current() -> None:
    assert REFERENCE.read_text() == render(), (
        "docs/settings.md is out of date: run `predictd config reference > docs/settings.md`"
    )


def test_every_setting_says_what_it_does() -> None:
    assert undocumented() == []


def test_every_section_and_setting_is_in_the_reference() -> None:
    text = REFERENCE.read_text()
    for heading in ("[media]", "[moderation]", "[webhooks]", "[security]", "[legal]", "[[models]]"):
        assert f"## `{heading}`" in text
    webhooks = text.split("## `[webhooks]`", 1)[1].split("\n## ", 1)[0]
    assert "| `allow_private` | boolean | `false` |" in webhooks
    assert "| `allowed_networks` | list of string | `[]` |" in webhooks
    assert "| `port` (`PREDICTD_PORT`) | integer, >= 0, <= 65535 | `8000` |" in text


def test_the_readme_points_at_the_reference() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "(docs/settings.md)" in readme
    assert "[webhooks]" in readme
