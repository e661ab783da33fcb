"""Security screen benchmark: how long the text screen holds the event loop for one large string.

The screen runs on the API process's event loop, so its cost per string is a latency every other request
waits through. It reads only the first ``DEFAULT_MAX_CHARS`` characters of a string and refuses patterns
that could backtrack badly (both checked by tests/unit/test_security_rules.py); this prints what that
bounded work costs on inputs shaped to make the packaged patterns work hardest (open tags, repeated verbs,
every rule's examples cut short just before they would match), next to ordinary prose.

Run from the repository root: ``.venv/bin/python bench/screen.py [--size 1000000] [--repeat 5] [--json]``.
Each figure is the best of ``--repeat`` runs of ``SecurityScreen.screen`` on one string of ``--size``
characters, and the ms per 1,000 characters actually screened.
"""

from __future__ import annotations

import argparse
import time

import orjson

from predictd.safety.security import DEFAULT_MAX_CHARS, SecurityScreen


def adversarial_inputs(screen: SecurityScreen, size: int) -> dict[str, str]:
    near_misses = " ".join(
        cut
        for rule in screen.rules
        for example in rule.examples
        for cut in (example[:-1], example[: len(example) // 2])
    )
    prose = "a red cotton shirt with long sleeves, photographed on a model in soft daylight. "
    return {
        "prose": (prose * (size // len(prose) + 1))[:size],
        "one letter": "a" * size,
        "near misses": ((near_misses + " ") * (size // len(near_misses) + 1))[:size],
        "open braces": "{{ " * (size // 3),
        "open lookups": "#{7" * (size // 3),
        "open tags": "<a " * (size // 3),
        "verbs": "ignore " * (size // 7),
        "quotes": "' or " * (size // 5),
        "traversal": ".." * (size // 2),
        "requests": "print " * (size // 6),
        "pipes": "curl " * (size // 5),
        "ligatures": "\ufdfa" * size,
        "zero width": "\u200b" * size,
    }


def best_of(repeat: int, screen: SecurityScreen, text: str) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        screen.screen({"prompt": text})
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="characters per input string")
    parser.add_argument("--repeat", type=int, default=5, help="runs per input; the best is reported")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    screen = SecurityScreen.default()
    screened = min(args.size, DEFAULT_MAX_CHARS)
    rows = []
    for name, text in adversarial_inputs(screen, args.size).items():
        seconds = best_of(args.repeat, screen, text)
        finding = screen.screen({"prompt": text})
        rows.append(
            {
                "input": name,
                "chars": len(text),
                "ms": round(seconds * 1e3, 2),
                "ms_per_1k_screened": round(seconds * 1e6 / screened, 3),
                "finding": finding.rule_id if finding else None,
            }
        )
    if args.json:
        print(
            orjson.dumps({"max_chars": DEFAULT_MAX_CHARS, "rows": rows}, option=orjson.OPT_INDENT_2).decode()
        )
        return
    print(f"security screen, one string per input, first {DEFAULT_MAX_CHARS:,} characters screened")
    print(f"{'input':14} {'chars':>9} {'ms':>8} {'ms/1k':>7}  finding")
    for row in rows:
        print(
            f"{row['input']:14} {row['chars']:>9,} {row['ms']:>8.2f} {row['ms_per_1k_screened']:>7.3f}  "
            f"{row['finding'] or '-'}"
        )
    print(f"worst: {max(row['ms'] for row in rows):.2f} ms")


if __name__ == "__main__":
    main()
