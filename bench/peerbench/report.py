"""Tables, ratios and the PASS / MISS verdict on each of the issue's targets, from a run's report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MB_PER_MIB = 1.048576
GOALS = {
    "celery_ratio": 4.0,  # predictd no-op predictions/s >= 4x the FastAPI + Celery stack at c=32
    "cog_rust_ratio": 1.0,  # ... and >= the Rust Cog server
    "status_floor_ratio": 0.5,  # status GET >= 50 % of the raw ASGI floor
    "submit_p50_ms": 2.0,  # at concurrency 1
    "sleep_per_s": 0.9 * 160.0,  # 8 slots x 50 ms = 160/s ideal
    "rss_rest_mb": 150.0,
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def _find(
    report: dict[str, Any], scenario: str, target: str, variant: str, conc: int
) -> dict[str, Any] | None:
    for row in report["rows"]:
        if (row["scenario"], row["target"], row["variant"], row["concurrency"]) == (
            scenario,
            target,
            variant,
            conc,
        ):
            return dict(row)
    return None


def _rate(row: dict[str, Any] | None) -> float | None:
    if row is None or "unavailable" in row:
        return None
    return float(row["ok_per_s"]) if row.get("ok_per_s") is not None else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _several_rounds(report: dict[str, Any]) -> bool:
    return int(report["plan"].get("rounds", 1)) > 1


def _each_round(row: dict[str, Any]) -> str:
    """Every round's rate, in the order run (the row itself is the median one)."""
    return " / ".join(f"{rate:.0f}" for rate in row.get("round_rates", ()))


def _client_pct(row: dict[str, Any]) -> float | None:
    return 100.0 * row["client_cpu_s"] / row["wall_s"] if row.get("wall_s") else None


def _name(row: dict[str, Any]) -> str:
    return f"{row['label']} ({row['variant']})"


def _unavailable_rows(rows: list[dict[str, Any]], width: int) -> list[list[Any]]:
    """A run that could not be measured (its reason is printed under the tables)."""
    return [[_name(r), r["concurrency"], "unavailable", *([None] * (width - 3))] for r in rows]


def _missing_rows(report: dict[str, Any], names: Sequence[str], width: int) -> list[list[Any]]:
    """Targets that could not be installed or started (their reasons are printed under the tables)."""
    labels = report["labels"]
    return [
        [labels.get(n, n), "-", "unavailable", *([None] * (width - 3))]
        for n in names
        if n in report["unavailable"]
    ]


def noop_section(report: dict[str, Any]) -> list[str]:
    header = [
        "target",
        "conc",
        "done",
        "409",
        "err",
        "pred/s",
        "submit p50 ms",
        "submit p99 ms",
        "s2c p50 ms",
        "s2c p99 ms",
        "req/s",
        "server CPU s",
        "client CPU s",
        "client CPU %",
        "RSS load MiB",
    ]
    rounds = _several_rounds(report)
    header += ["pred/s each round"] if rounds else []
    rows: list[list[Any]] = []
    measured = [r for r in report["rows"] if r["scenario"] == "noop"]
    for r in measured:
        if "unavailable" in r:
            rows += _unavailable_rows([r], len(header))
            continue
        rows.append(
            [
                _name(r),
                r["concurrency"],
                r["ok"],
                r["rejected"],
                r["errors"],
                r["ok_per_s"],
                r["submit_p50_ms"],
                r["submit_p99_ms"],
                r["complete_p50_ms"],
                r["complete_p99_ms"],
                r["requests_per_s"],
                r["server_cpu_s"],
                r["client_cpu_s"],
                _client_pct(r),
                r["rss_load_mib"],
                *([_each_round(r)] if rounds else []),
            ]
        )
    rows += _missing_rows(report, ("predictd", "celery", "cog-python", "cog-rust"), len(header))
    lines = ["== No-op model end to end (submit, then complete) ==", table(header, rows), ""]
    lines.append("ratios of completed predictions/s (predictd poll / reference; predictd await / reference):")
    for conc in sorted({r["concurrency"] for r in measured}):
        poll = _rate(_find(report, "noop", "predictd", "poll", conc))
        wait = _rate(_find(report, "noop", "predictd", "await", conc))
        parts = []
        for target, variant, short in (
            ("celery", "poll", "Celery"),
            ("cog-python", "sync", "Cog Python"),
            ("cog-rust", "sync", "Cog Rust"),
        ):
            ref = _rate(_find(report, "noop", target, variant, conc))
            parts.append(f"/ {short} {_fmt(_ratio(poll, ref), 2)}x; {_fmt(_ratio(wait, ref), 2)}x")
        lines.append(f"  c={conc:<3} " + "   ".join(parts))
    lines.append(
        "submit = the POST's answer (for Cog, which answers when the prediction is done, the whole "
        "prediction); s2c = submit to complete (the terminal GET, or the answer itself);"
    )
    lines.append("409 = refused as busy (Cog), not counted as done; err = any other failure.")
    return lines


def status_section(report: dict[str, Any]) -> list[str]:
    header = [
        "target",
        "path",
        "conc",
        "req/s",
        "p50 ms",
        "p99 ms",
        "err",
        "server CPU s",
        "client CPU s",
        "client CPU %",
        "vs floor",
    ]
    rounds = _several_rounds(report)
    header += ["req/s each round"] if rounds else []
    floor = _find(report, "status", "floor", "GET", 32)
    floor_rate = _rate(floor)
    rows: list[list[Any]] = []
    for r in (r for r in report["rows"] if r["scenario"] == "status"):
        if "unavailable" in r:
            rows += _unavailable_rows([r], len(header))
            continue
        ratio = _ratio(_rate(r), floor_rate)
        rows.append(
            [
                r["label"],
                r["path"][:40],
                r["concurrency"],
                r["ok_per_s"],
                r["submit_p50_ms"],
                r["submit_p99_ms"],
                r["errors"],
                r["server_cpu_s"],
                r["client_cpu_s"],
                _client_pct(r),
                None if ratio is None else f"{100 * ratio:.0f} %",
                *([_each_round(r)] if rounds else []),
            ]
        )
    rows += _missing_rows(report, ("predictd", "celery", "floor"), len(header))
    return [
        "== Status GET (one completed prediction, repeatedly) ==",
        table(header, rows),
        "Cog keeps no finished prediction to GET (a sync POST /predictions answers the result itself): n/a.",
    ]


def sleep_section(report: dict[str, Any]) -> list[str]:
    header = [
        "target",
        "slots",
        "conc",
        "done",
        "409",
        "err",
        "pred/s",
        "submit p50 ms",
        "s2c p50 ms",
        "s2c p99 ms",
        "server CPU s",
        "client CPU s",
        "vs 160/s",
    ]
    rounds = _several_rounds(report)
    header += ["pred/s each round"] if rounds else []
    rows: list[list[Any]] = []
    for r in (r for r in report["rows"] if r["scenario"] == "sleep"):
        if "unavailable" in r:
            rows += _unavailable_rows([r], len(header))
            continue
        rows.append(
            [
                r["label"],
                8,
                r["concurrency"],
                r["ok"],
                r["rejected"],
                r["errors"],
                r["ok_per_s"],
                r["submit_p50_ms"],
                r["complete_p50_ms"],
                r["complete_p99_ms"],
                r["server_cpu_s"],
                r["client_cpu_s"],
                f"{100 * r['ok_per_s'] / 160.0:.0f} %",
                *([_each_round(r)] if rounds else []),
            ]
        )
    rows += _missing_rows(report, ("predictd-sleep8", "celery-sleep8"), len(header))
    return ["== 50 ms sleep model, 8 worker slots, 32 in flight (queueing) ==", table(header, rows)]


def memory_section(report: dict[str, Any]) -> list[str]:
    header = [
        "server (process tree)",
        "processes",
        "RSS at rest MiB",
        "PSS at rest MiB",
        "HTTP process RSS at rest MiB",
        "RSS peak under load MiB",
        "RSS after load MiB",
    ]
    rows = [
        [
            m["label"],
            m["processes"],
            m["rss_rest_mib"],
            m["pss_rest_mib"],
            m["rss_api_rest_mib"],
            m["rss_peak_mib"],
            m["rss_after_mib"],
        ]
        for m in report["memory"].values()
    ]
    return [
        "== Memory of each server's process tree ==",
        table(header, rows),
        "RSS sums every process of the tree (pages shared by forked workers count in each); PSS splits them. "
        "Redis (shared, not started here) is not counted for the Celery stack.",
    ]


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets: measured value, goal, and whether it was met (None: could not be measured)."""
    concs = sorted({r["concurrency"] for r in report["rows"] if r["scenario"] == "noop"})
    top = 32 if 32 in concs else (concs[-1] if concs else 32)
    poll = _rate(_find(report, "noop", "predictd", "poll", top))
    celery = _ratio(poll, _rate(_find(report, "noop", "celery", "poll", top)))
    rust = _ratio(poll, _rate(_find(report, "noop", "cog-rust", "sync", top)))
    status = _ratio(
        _rate(_find(report, "status", "predictd", "GET", 32)),
        _rate(_find(report, "status", "floor", "GET", 32)),
    )
    first = _find(report, "noop", "predictd", "poll", 1)
    submit = None if first is None or "unavailable" in first else first["submit_p50_ms"]
    sleep = _find(report, "sleep", "predictd-sleep8", "poll", 32)
    sleep_rate = _rate(sleep)
    every_round = report.get("all_rows", report["rows"])
    sleep_rounds = [r for r in every_round if r["scenario"] == "sleep" and r["target"] == "predictd-sleep8"]
    sleep_clean = bool(sleep_rounds) and all(
        "unavailable" not in r and not (r["errors"] or r["rejected"]) for r in sleep_rounds
    )
    mem = report["memory"].get("predictd", {})
    rest_mb = None if mem.get("rss_rest_mib") is None else mem["rss_rest_mib"] * MB_PER_MIB
    predictd_rows = [  # every round counts: a median row could hide a failed round
        r for r in every_round if r["target"].startswith("predictd") and r["scenario"] != "status"
    ]
    incomplete = sum(
        r.get("errors", 0) + r.get("rejected", 0) for r in predictd_rows if "unavailable" not in r
    )

    def verdict(value: float | None, ok: bool) -> bool | None:
        return None if value is None else ok

    return [
        {
            "target": f"no-op pred/s at c={top}: predictd / FastAPI+Celery",
            "value": celery,
            "goal": ">= 4.00x",
            "pass": verdict(celery, (celery or 0) >= GOALS["celery_ratio"]),
        },
        {
            "target": f"no-op pred/s at c={top}: predictd / Cog Rust (completed)",
            "value": rust,
            "goal": ">= 1.00x",
            "pass": verdict(rust, (rust or 0) >= GOALS["cog_rust_ratio"]),
        },
        {
            "target": "every predictd submit completed (no 409, no error)",
            "value": incomplete,
            "goal": "0 not completed",
            "pass": verdict(float(incomplete) if predictd_rows else None, incomplete == 0),
        },
        {
            "target": "status GET req/s: predictd / raw ASGI floor",
            "value": status,
            "goal": ">= 50 %",
            "pass": verdict(status, (status or 0) >= GOALS["status_floor_ratio"]),
        },
        {
            "target": "submit p50 at c=1 (ms)",
            "value": submit,
            "goal": "<= 2.0 ms",
            "pass": verdict(submit, (submit or 99) <= GOALS["submit_p50_ms"]),
        },
        {
            "target": "50 ms model, 8 slots: pred/s (all queued, none refused)",
            "value": sleep_rate,
            "goal": ">= 144 /s",
            "pass": verdict(sleep_rate, (sleep_rate or 0) >= GOALS["sleep_per_s"] and sleep_clean),
        },
        {
            "target": "predictd RSS at rest, echo + sleep workers (MB)",
            "value": rest_mb,
            "goal": "<= 150 MB",
            "pass": verdict(rest_mb, (rest_mb or 1e9) <= GOALS["rss_rest_mb"]),
        },
    ]


def checks_section(report: dict[str, Any]) -> list[str]:
    rows = []
    for c in report["checks"]:
        value = c["value"]
        shown = f"{value:.2f}" if isinstance(value, float) else _fmt(value)
        if "predictd /" in c["target"] and isinstance(value, float):
            shown = f"{100 * value:.0f} %" if "floor" in c["target"] else f"{value:.2f}x"
        verdict = {True: "PASS", False: "MISS", None: "n/a (not measured)"}[c["pass"]]
        rows.append([c["target"], shown, c["goal"], verdict])
    return [
        "== Targets (embedded mode, measured in this run) ==",
        table(["target", "measured", "goal", ""], rows),
    ]


def render(report: dict[str, Any]) -> str:
    plan = report["plan"]
    lines = [
        f"predictd peer benchmark: {report['cpus']} CPUs, Python {report['python']}, everything on "
        f"{report['host']}; warm-up {plan['warmup_s']:g} s + {plan['duration_s']:g} s per no-op run, "
        f"polls every {1000 * plan['poll_s']:g} ms; one client process per run (asyncio, uvloop, httptools); "
        f"each row is the median of {plan.get('rounds', 1)} round(s)",
        "",
    ]
    for section in (noop_section, status_section, sleep_section, memory_section, checks_section):
        lines += [*section(report), ""]
    for name, reason in report["unavailable"].items():
        lines.append(f"unavailable: {report['labels'].get(name, name)}: {reason}")
    for row in report["rows"]:
        if "unavailable" in row:
            lines.append(
                f"unavailable run: {row['scenario']} {_name(row)} c={row['concurrency']}: "
                f"{row['unavailable']}"
            )
    lines += [f"note: {note}" for note in report["notes"]]
    before, after = report["loadavg_before"], report["loadavg_after"]
    lines.append(
        f"total time {report['elapsed_s']:g} s; machine load average (1, 5, 15 min) before {before}, "
        f"after {after}: other processes on the machine compete for its {report['cpus']} cores"
    )
    return "\n".join(lines)
