"""Security screening of text inputs: prompt injection, code injection, secret exfiltration, phishing.

The rules are data, not code: ``rules/security.toml`` in this package holds every rule, with an id, a
category, a severity, its regular expressions, and examples that must match and counter-examples that must
not (the tests, and every load, check them). An operator may add rules or replace the set with a file of
their own (:meth:`SecurityScreen.from_file`).

Each string value of a request's ``input`` is screened (recursively through lists and objects), except a
string that is one http(s) URL or ``data:`` URI (media the server fetches or decodes, not text a model
reads). Before matching, text is normalised: format characters such as zero-width spaces removed, NFKC,
case folding, typographic quotes folded to ASCII quotes, runs of whitespace collapsed to one space. So
patterns are written against lower-case text with single spaces, and the full-width, mathematical-bold
or zero-width-split forms of ``IGNORE`` all read as ``ignore``. Look-alike letters from other scripts,
letters split by spaces, and text past the scanned prefix (:data:`DEFAULT_MAX_CHARS` characters of each
string) are not caught.

Python's ``re`` backtracks, so a careless pattern can take exponential time on a crafted input. Every
pattern is checked when its rule is built: no unbounded quantifier (``*``, ``+``, ``{n,}``), no bound over
:data:`MAX_REPEAT_BOUND`, and no repeated group (more than once) whose body can match texts of different
lengths (the ``(a+)+`` / ``(a|ab)*`` shapes). With the prefix bound, the work per string is linear.

Most patterns cannot match unless the text holds one of a few literal strings (``ignore``, ``<script``,
``jndi``): :func:`required_literals` reads them from the pattern, and an ASCII text that holds none of a
pattern's literals skips that pattern's search. Substring tests cost a fraction of a regex search, so an
ordinary prompt is screened several times faster. Text with any non-ASCII character searches every pattern:
case-insensitive matching makes some non-ASCII letters equal to ASCII ones (U+0131, a dotless i, matches
``i``).
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from .text import normalize

__all__ = [
    "CATEGORIES",
    "DEFAULT_MAX_CHARS",
    "GATE_MIN_CHARS",
    "MAX_REPEAT_BOUND",
    "SEVERITIES",
    "SecurityFinding",
    "SecurityRule",
    "SecurityScreen",
    "check_pattern",
    "gate_text",
    "load_rules",
    "min_match_chars",
    "normalize_for_screening",
    "parse_rules",
    "required_literals",
]

CATEGORIES = frozenset({"prompt_injection", "abuse", "exfiltration", "code_injection"})
SEVERITIES = frozenset({"high", "medium"})

DEFAULT_MAX_CHARS = 20_000
"""How many characters of each string are screened (before and after normalisation)."""

GATE_MIN_CHARS = 12
"""Below this length searching every pattern costs less than first testing the literals they need."""

MAX_REPEAT_BOUND = 200
"""The largest upper bound a quantifier in a rule pattern may have."""

_RULE_KEYS = frozenset(
    {"id", "category", "description", "severity", "patterns", "examples", "counter_examples"}
)
_REQUIRED_KEYS = ("id", "category", "description", "severity", "patterns")
_ID = re.compile(r"[a-z0-9]+(?:[-_][a-z0-9]+)*(?:\.[a-z0-9]+(?:[-_][a-z0-9]+)*)*")
_MEDIA = re.compile(r"(?:https?://|data:)\S*", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u201c": '"', "\u201d": '"'})
_REPEATS = frozenset({"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"})
_PACKAGED_RULES = "security.toml"


def normalize_for_screening(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text rules are matched against: the first ``max_chars`` characters, format characters dropped,
    NFKC, case folded, typographic quotes folded, whitespace collapsed to single spaces and stripped."""
    # NFKC can lengthen text (one ligature becomes up to 18 characters): cut again after normalising.
    folded = normalize(text[:max_chars])[:max_chars].translate(_QUOTES)
    return _WHITESPACE.sub(" ", folded).strip()


def _is_media(text: str) -> bool:
    """Whether the whole string (trimmed) is one http(s) URL or data: URI, with no whitespace in it."""
    return _MEDIA.fullmatch(text.strip()) is not None


def _regex_parser() -> Any | None:
    """CPython's regex parser, the one re.compile uses (None on an interpreter without it)."""
    try:
        return importlib.import_module("re._parser")
    except ImportError:  # pragma: no cover - every CPython from 3.11 has it
        return None


def check_pattern(pattern: str) -> None:
    """Raise ValueError if a pattern could backtrack badly (see the module docstring for the rules)."""
    parser = _regex_parser()
    if parser is not None:
        _check_subpattern(parser, parser.parse(pattern), pattern)


def _check_subpattern(parser: Any, subpattern: Any, pattern: str) -> None:
    for op, av in subpattern.data:
        if str(op) in _REPEATS:
            low, high, body = av
            if high == parser.MAXREPEAT:
                raise ValueError(
                    f"pattern {pattern!r} has an unbounded quantifier; write {{{low},N}} "
                    f"with N <= {MAX_REPEAT_BOUND}"
                )
            if high > MAX_REPEAT_BOUND:
                raise ValueError(f"pattern {pattern!r} has a quantifier over {MAX_REPEAT_BOUND}")
            body_low, body_high = body.getwidth()
            if high > 1 and body_low != body_high:
                raise ValueError(
                    f"pattern {pattern!r} repeats a group that can match texts of different lengths"
                )
        for child in _subpatterns(parser, av):
            _check_subpattern(parser, child, pattern)


def gate_text(normalized: str) -> str | None:
    """The text that patterns' required literals are looked for in: the lower-case form of an ASCII text
    (NFKC after case folding can give upper case: ``℡`` becomes ``TEL``), or None for any other text,
    which then searches every pattern. Also None for a text shorter than :data:`GATE_MIN_CHARS`."""
    if len(normalized) < GATE_MIN_CHARS or not normalized.isascii():
        return None
    return normalized if normalized.islower() else normalized.lower()


def min_match_chars(pattern: re.Pattern[str]) -> int:
    """The fewest characters any match of ``pattern`` spans (0 when the parser is unavailable): a text
    shorter than that cannot hold a match. Exact even ignoring case, where Python's ``re`` matches one
    character with one character."""
    parser = _regex_parser()
    if parser is None:
        return 0
    return int(parser.parse(pattern.pattern, pattern.flags).getwidth()[0])


def required_literals(pattern: re.Pattern[str]) -> tuple[str, ...] | None:
    """Lower-case strings of which every match of ``pattern`` in lower-case ASCII text contains one, or
    None when no such set could be found (the pattern is then always searched).

    A necessary condition only, read from the parsed pattern: a run of literal characters; the literals of
    a group, a lookaround that must succeed, or a repeat that must happen at least once; the union of every
    branch's literals when each branch has some. Of the candidates in a sequence, the most selective wins.
    """
    parser = _regex_parser()
    if parser is None:
        return None
    return _literals_of(parser, parser.parse(pattern.pattern, pattern.flags))


def _literals_of(parser: Any, subpattern: Any) -> tuple[str, ...] | None:
    candidates: list[tuple[str, ...]] = []
    run: list[str] = []

    def end_run() -> None:
        if run:
            candidates.append(("".join(run),))
            run.clear()

    for op, av in subpattern.data:
        name = str(op)
        if name == "LITERAL" and av < 128:
            run.append(chr(av).lower())
            continue
        end_run()
        found: tuple[str, ...] | None = None
        if name == "SUBPATTERN":
            found = _literals_of(parser, av[-1])
        elif name == "ATOMIC_GROUP":
            found = _literals_of(parser, av)
        elif name == "ASSERT":  # a lookahead or lookbehind that must succeed reads text that is there
            found = _literals_of(parser, av[1])
        elif name in _REPEATS and av[0] >= 1:
            found = _literals_of(parser, av[2])
        elif name == "BRANCH":
            branches = [_literals_of(parser, branch) for branch in av[1]]
            if all(branch is not None for branch in branches):
                found = tuple(dict.fromkeys(lit for branch in branches if branch for lit in branch))
        if found:
            candidates.append(found)
    end_run()
    if not candidates:
        return None
    return max(candidates, key=lambda literals: (min(map(len, literals)), -len(literals)))


def _subpatterns(parser: Any, value: Any) -> Iterable[Any]:
    if isinstance(value, parser.SubPattern):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _subpatterns(parser, item)


@dataclass(frozen=True)
class SecurityRule:
    """One named rule: it matches a normalised text when any of its patterns is found in it."""

    id: str
    category: str
    description: str
    severity: str
    patterns: tuple[re.Pattern[str], ...]
    examples: tuple[str, ...] = ()
    counter_examples: tuple[str, ...] = ()
    # Per pattern, the literals one of which an ASCII text must hold for it to match (see required_literals).
    gates: tuple[tuple[str, ...] | None, ...] = field(init=False, repr=False, compare=False)
    # Per pattern, the length a text needs to hold a match (see min_match_chars), and the least of them.
    min_chars: tuple[int, ...] = field(init=False, repr=False, compare=False)
    shortest: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _ID.fullmatch(self.id):
            raise ValueError(f"rule id {self.id!r} must be lower-case words joined by '.', '-' or '_'")
        if self.category not in CATEGORIES:
            raise ValueError(f"rule {self.id}: category {self.category!r} is not one of {sorted(CATEGORIES)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"rule {self.id}: severity {self.severity!r} is not one of {sorted(SEVERITIES)}")
        if not self.patterns:
            raise ValueError(f"rule {self.id} has no patterns")
        for pattern in self.patterns:
            try:
                check_pattern(pattern.pattern)
            except ValueError as exc:
                raise ValueError(f"rule {self.id}: {exc}") from None
        object.__setattr__(self, "gates", tuple(required_literals(pattern) for pattern in self.patterns))
        min_chars = tuple(min_match_chars(pattern) for pattern in self.patterns)
        object.__setattr__(self, "min_chars", min_chars)
        object.__setattr__(self, "shortest", min(min_chars))

    def matches(self, normalized: str) -> bool:
        """Whether any pattern is found in text already passed through :func:`normalize_for_screening`."""
        return self.found_in(normalized, gate_text(normalized))

    def found_in(self, normalized: str, probe: str | None) -> bool:
        """:meth:`matches`, given ``gate_text(normalized)`` (computed once for every rule of a screen)."""
        size = len(normalized)
        for pattern, gate, min_chars in zip(self.patterns, self.gates, self.min_chars, strict=True):
            if size < min_chars:
                continue  # too short to hold a match: a short prompt skips most searches
            if probe is not None and gate is not None:
                for literal in gate:
                    if literal in probe:
                        break
                else:
                    continue  # none of the literals it needs: it cannot match
            if pattern.search(normalized):
                return True
        return False

    def check_examples(self) -> None:
        """Raise ValueError unless every example matches this rule and no counter-example does."""
        for example in self.examples:
            if not self.matches(normalize_for_screening(example)):
                raise ValueError(f"rule {self.id}: example {example!r} does not match")
        for counter in self.counter_examples:
            if self.matches(normalize_for_screening(counter)):
                raise ValueError(f"rule {self.id}: counter-example {counter!r} matches")


@dataclass(frozen=True)
class SecurityFinding:
    """The first rule a request's input matched, and where: ``field`` is e.g. ``input.items[2].text``."""

    rule_id: str
    category: str
    field: str

    @property
    def reason(self) -> str:
        return f"{self.field} matches security rule {self.rule_id} ({self.category.replace('_', ' ')})"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError(f"{what} must be a string or a list of strings")


def _rule(table: Any, source: str, index: int) -> SecurityRule:
    where = f"{source}: rules[{index}]"
    if not isinstance(table, dict):
        raise ValueError(f"{where} is not a table")
    unknown = set(table) - _RULE_KEYS
    if unknown:
        raise ValueError(f"{where} has unknown keys {sorted(unknown)}")
    missing = [key for key in _REQUIRED_KEYS if key not in table]
    if missing:
        raise ValueError(f"{where} lacks {missing}")
    for key in ("id", "category", "description", "severity"):
        if not isinstance(table[key], str):
            raise ValueError(f"{where}: {key} must be a string")
    rule_id: str = table["id"]
    where = f"{source}: rule {rule_id}"
    compiled: list[re.Pattern[str]] = []
    for text in _strings(table["patterns"], f"{where}: patterns"):
        try:
            compiled.append(re.compile(text, re.IGNORECASE))
        except re.error as exc:
            raise ValueError(f"{where}: pattern {text!r} does not compile: {exc}") from None
    rule = SecurityRule(
        id=rule_id,
        category=table["category"],
        description=table["description"],
        severity=table["severity"],
        patterns=tuple(compiled),
        examples=_strings(table.get("examples", []), f"{where}: examples"),
        counter_examples=_strings(table.get("counter_examples", []), f"{where}: counter_examples"),
    )
    rule.check_examples()
    return rule


def parse_rules(text: str, source: str = "<rules>") -> tuple[SecurityRule, ...]:
    """Rules from the text of a rule file: ``[[rules]]`` tables (see the packaged ``security.toml``).

    Raises ValueError for bad TOML, an unknown or missing key, a bad category or severity, a pattern that
    does not compile or could backtrack badly, an example that does not match its rule or a
    counter-example that does, or a rule id given twice.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{source} is not valid TOML: {exc}") from None
    unknown = set(document) - {"rules"}
    if unknown:
        raise ValueError(f"{source} has unknown top-level keys {sorted(unknown)}")
    tables = document.get("rules", [])
    if not isinstance(tables, list):
        raise ValueError(f"{source}: rules must be an array of tables ([[rules]])")
    rules = tuple(_rule(table, source, index) for index, table in enumerate(tables))
    seen: set[str] = set()
    for rule in rules:
        if rule.id in seen:
            raise ValueError(f"{source}: rule id {rule.id} is given twice")
        seen.add(rule.id)
    return rules


def load_rules(path: str | os.PathLike[str]) -> tuple[SecurityRule, ...]:
    """Rules from a rule file on disk (UTF-8 TOML)."""
    with open(path, encoding="utf-8") as file:
        return parse_rules(file.read(), os.fspath(path))


@functools.cache
def _default_rules() -> tuple[SecurityRule, ...]:
    resource = resources.files(__package__ or "predictd.safety").joinpath("rules", _PACKAGED_RULES)
    return parse_rules(resource.read_text(encoding="utf-8"), f"predictd/safety/rules/{_PACKAGED_RULES}")


class SecurityScreen:
    """Screens request inputs against an ordered rule set. Immutable, so thread-safe."""

    def __init__(self, rules: Sequence[SecurityRule], *, max_chars: int = DEFAULT_MAX_CHARS) -> None:
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars!r}")
        ids = [rule.id for rule in rules]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        self.rules: tuple[SecurityRule, ...] = tuple(rules)
        self.max_chars = max_chars

    @classmethod
    def default(cls) -> SecurityScreen:
        """The packaged rule set (``predictd/safety/rules/security.toml``), parsed and compiled once."""
        return cls(_default_rules())

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, include_default: bool = False) -> SecurityScreen:
        """The rules of an operator's file: alone (a replacement set), or with ``include_default`` added to
        the packaged rules, where a rule whose id is a packaged rule's takes that rule's place."""
        extra = load_rules(path)
        if not include_default:
            return cls(extra)
        by_id = {rule.id: rule for rule in extra}
        merged = [by_id.pop(rule.id, rule) for rule in _default_rules()]
        merged.extend(rule for rule in extra if rule.id in by_id)
        return cls(merged)

    def match(self, text: str) -> SecurityRule | None:
        """The first rule (in rule order) that the normalised text matches. URLs are not skipped here."""
        normalized = normalize_for_screening(text, self.max_chars)
        if not normalized:
            return None
        probe = gate_text(normalized)
        size = len(normalized)
        for rule in self.rules:
            if size >= rule.shortest and rule.found_in(normalized, probe):
                return rule
        return None

    def screen(self, inputs: Mapping[str, Any], *, prefix: str = "input") -> SecurityFinding | None:
        """The first finding over every string in ``inputs``, in document order, or None.

        Lists, tuples and mappings are walked recursively; other non-string values are ignored, and so is
        a string that is one http(s) URL or data: URI. ``prefix`` starts each field path.
        """
        seen: set[int] = set()
        stack: list[tuple[str, Any]] = [(prefix, inputs)]
        while stack:
            path, value = stack.pop()
            if isinstance(value, str):
                if _is_media(value):
                    continue
                rule = self.match(value)
                if rule is not None:
                    return SecurityFinding(rule.id, rule.category, path)
            elif isinstance(value, Mapping | list | tuple):
                if id(value) in seen:  # a container reachable twice (or a cycle) is screened once
                    continue
                seen.add(id(value))
                if isinstance(value, Mapping):
                    children = [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
                else:
                    children = [(f"{path}[{index}]", item) for index, item in enumerate(value)]
                stack.extend(reversed(children))
        return None
