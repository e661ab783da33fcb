"""Text moderation: an operator word list, then the ``alt-profanity-check`` classifier.

The word list is matched whole-word on Unicode-normalised text (format characters such as zero-width
spaces removed, then NFKC and case folding), so ``BAD``, its fullwidth form and its mathematical-bold
form all match the term ``bad``, while ``badge`` or ``abad`` do not. Two simple obfuscations are caught
as well:

* a letter stretched to three or more copies (``baaad``); a doubled letter is not (``good`` does not match
  ``god``), since doubled letters are common spelling;
* the same separator between every letter (``b.a.d``, ``b a d``, ``b-a-d``, ``b_a_d``); mixed separators
  (``b.a d``) are not.

Letter substitutions (``b@d``, ``4ss``) and look-alike letters from other scripts are not caught. Words
are runs of what Python's ``re`` calls word characters, so in scripts written with combining vowel signs
(Devanagari, Thai) a term can fail to match.
"""

from __future__ import annotations

import itertools
import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import ModerationLevel, ModerationUnavailable, Verdict, check_thresholds, threshold_verdict

__all__ = ["WORD_LIST_REASON", "TextModerator", "TextPolicy", "compile_term", "normalize"]

_ALNUM = r"[^\W_]"
_NOT_ALNUM = r"[\W_]"

WORD_LIST_REASON = "text matches a term on the operator word list"


@dataclass(frozen=True)
class TextPolicy:
    """Thresholds on the classifier's offensive-language probability, and the operator's blocked terms.

    A text is refused at a level when its score is over that level's threshold. Blocked terms are refused
    at both judging levels, whatever the score. A term of several words matches those words in order with
    any separators between them.
    """

    conservative_threshold: float = 0.5
    permissive_threshold: float = 0.9
    blocked_terms: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_thresholds(self.conservative_threshold, self.permissive_threshold)
        for term in self.blocked_terms:
            if not _words(term):
                raise ValueError(f"blocked term {term!r} has no letters or digits")


def normalize(text: str) -> str:
    """Drop format characters (zero-width spaces, soft hyphens), then apply NFKC and case folding."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", kept).casefold())


def _words(term: str) -> list[str]:
    return re.findall(f"{_ALNUM}+", normalize(term))


def _word_pattern(word: str, group: str) -> str:
    """One word: each run of a letter as written or stretched to 3+, the same separator between letters."""
    sep = f"(?P={group})"
    runs: list[str] = []
    for char, copies in itertools.groupby(word):
        letter = re.escape(char)
        count = len(list(copies))
        stretched = f"{letter}(?:{sep}{letter}){{{max(count - 1, 2)},}}"
        runs.append(stretched if count >= 3 else f"(?:{letter}(?:{sep}{letter}){{{count - 1}}}|{stretched})")
    # The gap after the first letter fixes the separator (often none) used between all letters of the word.
    head = f"(?={re.escape(word[0])}(?P<{group}>{_NOT_ALNUM}*))"
    return head + sep.join(runs)


def compile_term(term: str) -> re.Pattern[str]:
    """The whole-word pattern of one blocked term, to search in :func:`normalize`-d text."""
    words = _words(term)
    if not words:
        raise ValueError(f"blocked term {term!r} has no letters or digits")
    body = f"{_NOT_ALNUM}+".join(_word_pattern(word, f"sep{i}") for i, word in enumerate(words))
    return re.compile(f"(?<!{_ALNUM}){body}(?!{_ALNUM})")


class TextModerator:
    """Judges text prompts. Thread-safe; the classifier is loaded on first use and kept."""

    def __init__(self, policy: TextPolicy) -> None:
        self.policy = policy
        self._patterns: tuple[re.Pattern[str], ...] = tuple(compile_term(t) for t in policy.blocked_terms)
        self._predict_prob: Callable[[Sequence[str]], Sequence[float]] | None = None
        self._lock = threading.Lock()

    def matches_word_list(self, text: str) -> bool:
        """Whether the text contains a blocked term (at any level but ``none`` that is a refusal)."""
        if not self._patterns:
            return False
        normalized = normalize(text)
        return any(pattern.search(normalized) for pattern in self._patterns)

    def score(self, text: str) -> float:
        """The classifier's probability, in [0, 1], that the text is offensive language."""
        predict_prob = self._classifier()
        try:
            return float(predict_prob([text])[0])
        except Exception as exc:
            raise ModerationUnavailable(f"the text classifier failed: {exc}") from exc

    def check(self, text: str, level: ModerationLevel) -> Verdict:
        if level is ModerationLevel.NONE:
            return Verdict(True, 0.0, "text moderation is off (level none)")
        if self.matches_word_list(text):
            return Verdict(False, 1.0, WORD_LIST_REASON)
        threshold = (
            self.policy.conservative_threshold
            if level is ModerationLevel.CONSERVATIVE
            else self.policy.permissive_threshold
        )
        return threshold_verdict(self.score(text), level, threshold, "text", "for offensive language")

    def _classifier(self) -> Callable[[Sequence[str]], Sequence[float]]:
        loaded = self._predict_prob
        if loaded is not None:
            return loaded
        with self._lock:
            if self._predict_prob is None:
                try:
                    # Importing the module loads its vectorizer and model (joblib files in the wheel).
                    from profanity_check import predict_prob
                except Exception as exc:
                    raise ModerationUnavailable(f"the text classifier could not be loaded: {exc}") from exc
                self._predict_prob = predict_prob
            return self._predict_prob
