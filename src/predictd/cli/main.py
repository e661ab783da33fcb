"""``predictd serve | keys | accounts``: run the server and administer its store."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from .._version import __version__
from ..config.settings import BUILTIN_MODELS, DEFAULT_ACCOUNT, Settings, load_settings
from ..core.domain import Plan, from_micros
from ..deploy.memory import give_back_large_blocks
from ..deploy.operator import Absence, database_absence, run_administration, shown_url
from ..deploy.private_files import keep_private
from ..errors import ApiError
from ..telemetry.logs import configure as configure_logging
from ..usecases.administration import Administration
from .client import predict, predictions_app
from .demo_key import keep_demo_key, kept_demo_key
from .listing import (
    key_record,
    print_columns,
    print_json_lines,
)

T = TypeVar("T")

app = typer.Typer(help="predictd: a self-hostable prediction API server.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
accounts_app = typer.Typer(help="Create, suspend and configure accounts.", no_args_is_help=True)
plans_app = typer.Typer(
    help="Plans: models, rate and concurrency limits, prepaid credits.", no_args_is_help=True
)
credits_app = typer.Typer(help="Grant, adjust and show credits.", no_args_is_help=True)
config_app = typer.Typer(help="The settings every command reads.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(accounts_app, name="accounts")
app.add_typer(plans_app, name="plans")
app.add_typer(credits_app, name="credits")
app.add_typer(config_app, name="config")

# Plain echo for what the commands print (rich would wrap it at 80 columns when piped, and read any
# "[...]" in a name as markup); rich only for styled messages on stderr.
err = Console(stderr=True, highlight=False, soft_wrap=True)

DEMO_LABEL = "demo"


class _Options:
    config: Path | None = None
    data_dir: Path | None = None
    database_url: str | None = None
    create_database: bool = False


@app.callback()
def _root(
    config: Annotated[Path | None, typer.Option(help="TOML settings file (env: PREDICTD_CONFIG).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Data folder (env: PREDICTD_DATA_DIR).")] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", "--database", help="Database URL (env: PREDICTD_DATABASE_URL)."),
    ] = None,
    create_database: Annotated[
        bool,
        typer.Option(
            help="Let an admin command (keys, accounts, plans, credits) create the database when it finds "
            "none; without it they refuse, so that a command meant for the server's database never writes "
            "into a new one. serve and worker always may."
        ),
    ] = False,
) -> None:
    _Options.config, _Options.data_dir, _Options.database_url = config, data_dir, database_url
    _Options.create_database = create_database


def _settings(**flags: Any) -> Settings:
    try:
        given = {"data_dir": _Options.data_dir, "database_url": _Options.database_url}
        given.update({name: value for name, value in flags.items() if value is not None})
        return load_settings(_Options.config, **given)
    except Exception as exc:  # pydantic's message names the bad setting
        err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _administer(settings: Settings, action: Callable[[Administration], Awaitable[T]]) -> T:
    """Run ``action`` on the operator use cases over the configured database (opening it migrates it)."""
    return asyncio.run(run_administration(settings, action))


def _migrate_apart(settings: Settings) -> None:
    """Bring the database to the newest schema in a forked child, so that the server itself never imports
    Alembic: a first start on a new data folder, or the first after an upgrade, would otherwise keep about
    11 MiB of migration machinery in the server for good. Forked before the server starts any thread."""
    if not hasattr(os, "fork"):
        return  # opening the store migrates in-process instead
    pid = os.fork()
    if pid == 0:  # the child: migrate (opening the store does), then leave without running the parent's exits
        code = 1
        try:
            _administer(settings, lambda _: asyncio.sleep(0))
            code = 0
        except Exception as exc:
            err.print(f"[red]the database could not be migrated:[/red] {exc}")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise typer.Exit(1)


def _try_line(settings: Settings, base: str, secret: str) -> str:
    """A first request to copy: a prediction of the built-in echo when it is served, else the model list."""
    echo = next(m for m in BUILTIN_MODELS if m["slug"] == "echo")
    if any(m.slug == "echo" and m.ref == echo["ref"] for m in settings.all_models):
        return (
            f"Try: curl -s {base}/v1/predict -H 'x-api-key: {secret}' -H 'content-type: application/json' "
            """-d '{"model": "echo", "input": {"text": "hello"}, "await": true}'"""
        )
    return f"Try: curl -s {base}/v1/models -H 'x-api-key: {secret}'"


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on (env: PREDICTD_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (env: PREDICTD_PORT).")] = None,
    demo: Annotated[
        bool,
        typer.Option(
            help="Print the demo account's API key at every start: the same key while it is not revoked, "
            "kept in the data folder's demo-key file (mode 0600)."
        ),
    ] = False,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
    database: Annotated[
        str | None, typer.Option(help="Database URL, e.g. postgresql://host/db (env: PREDICTD_DATABASE_URL).")
    ] = None,
    redis: Annotated[
        str | None,
        typer.Option(
            help="Redis URL: run scaled out, predictions on `predictd worker`s (env: PREDICTD_REDIS_URL)."
        ),
    ] = None,
) -> None:
    """Run the API server: embedded (SQLite, in-process queue, worker subprocesses), or with --redis one
    stateless API process of a scaled-out deployment."""
    import uvicorn

    from ..api.app import create_app
    from ..api.connection.guard import open_file_shortfall
    from ..api.connection.protocol import guarded
    from ..deploy.start import start_deployment

    settings = _settings(host=host, port=port, log_level=log_level, database_url=database, redis_url=redis)
    configure_logging(settings.log_level, settings.log_json)
    give_back_large_blocks()
    keep_private(settings.data_dir)
    shortfall = open_file_shortfall(settings)
    if shortfall:
        err.print(f"[yellow]warning:[/yellow] {shortfall}")
    _migrate_apart(settings)
    kept = kept_demo_key(settings.data_dir) if demo else None
    secret = _administer(
        settings, lambda admin: admin.startup_key(DEFAULT_ACCOUNT, DEMO_LABEL, demo=demo, kept=kept)
    )
    base = f"http://{settings.host}:{settings.port}"
    print(f"predictd {__version__} · data in {settings.data_dir.resolve()} · {base}")
    if secret:
        # Plain prints: a wrapped or styled key could not be copied and pasted.
        if demo:
            where = keep_demo_key(settings.data_dir, secret).resolve()
            print(f"API key for account '{DEFAULT_ACCOUNT}' (kept in {where}): {secret}")
        else:
            print(f"API key for account '{DEFAULT_ACCOUNT}' (shown once, store it): {secret}")
        print(_try_line(settings, base, secret), flush=True)
    config = uvicorn.Config(
        create_app(settings, start_deployment),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=guarded(settings),
        ws="none",  # no route speaks WebSocket: an upgrade request is an ordinary request
        lifespan="on",
        access_log=False,
        # Who forwarded a request, and what a forwarding header may be believed about, is decided in one
        # place from [legal] trusted_proxies (api/auth.py); uvicorn would otherwise rewrite the peer from
        # X-Forwarded-For for 127.0.0.1 on its own.
        proxy_headers=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 5,
    )
    uvicorn.Server(config).run()


@app.command()
def worker(
    models: Annotated[
        str | None, typer.Option(help="Comma-separated model slugs to serve (default: every configured one).")
    ] = None,
    database: Annotated[str | None, typer.Option(help="Database URL (env: PREDICTD_DATABASE_URL).")] = None,
    redis: Annotated[str | None, typer.Option(help="Redis URL (env: PREDICTD_REDIS_URL).")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning, error.")] = None,
) -> None:
    """Run models for a scaled-out deployment: take predictions from Redis, store outcomes in the database."""
    from ..api.surfaces import WEBHOOK_RENDERERS

    settings = _settings(log_level=log_level, database_url=database, redis_url=redis)
    if not settings.scaled_out or settings.database_url is None:
        err.print("[red]predictd worker needs --database and --redis[/red] (the deployment's shared state)")
        raise typer.Exit(2)
    configure_logging(settings.log_level, settings.log_json)
    give_back_large_blocks()
    keep_private(settings.data_dir)
    only = [slug.strip() for slug in models.split(",") if slug.strip()] if models else None
    try:
        asyncio.run(_run_worker(settings, only, WEBHOOK_RENDERERS))
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


async def _run_worker(settings: Settings, only: list[str] | None, renderers: Any) -> None:
    import os
    import signal
    import sys

    from ..deploy.scaled import STOP_OVERRUN_S, start_worker, stop_within

    node = await start_worker(settings, renderers, only)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    print(
        f"predictd worker {node.announcer.worker_id} serving {', '.join(only or ['all models'])}", flush=True
    )
    await stopping.wait()
    if not await stop_within(node.stop, settings.shutdown_grace_s + STOP_OVERRUN_S):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not SystemExit: asyncio.run would wait again for the tasks that did not end


def _no_database(settings: Settings, absence: Absence) -> str:
    """What an admin command that found no database says: which one it looked for, from which settings."""
    if settings.database_url:
        source = f"database_url is {shown_url(settings.resolved_database_url)}"
    else:
        source = f"database_url is not set: SQLite in data_dir {settings.data_dir.resolve()}"
    config = os.environ.get("PREDICTD_CONFIG")
    lines = [
        f"predictd: {absence.reason}; nothing was changed.",
        f"  Settings read: {source} (config file: {config or 'none'}).",
        "  Admin commands read the settings the server reads: give them the server's --config file",
        "  (or PREDICTD_CONFIG) and PREDICTD_* variables, or --database-url / --data-dir, from the same",
        "  working directory.",
    ]
    if absence.creatable:
        lines.append("  To create a new database there, add --create-database: predictd --create-database …")
    return "\n".join(lines)


def _admin(action: Callable[[Administration], Awaitable[T]]) -> T:
    """Run an operator use case against the deployment's database, which must exist (unless
    --create-database); a use case's errors exit 1 with their message."""
    settings = _settings()
    absence = asyncio.run(database_absence(settings))
    if absence is None or _Options.create_database:
        keep_private(settings.data_dir)
    if absence is not None and not (_Options.create_database and absence.creatable):
        typer.echo(_no_database(settings, absence), err=True)
        raise typer.Exit(1)
    try:
        return _administer(settings, action)
    except ApiError as exc:
        err.print(f"[red]{exc.error_id}[/red]: {escape(exc.message)}")
        raise typer.Exit(1) from None


JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line, every field whole.")]


@keys_app.command("create")
def keys_create(
    account: Annotated[str, typer.Option(help="Account name; created if it does not exist.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "cli",
) -> None:
    """Create an API key and print it once. Only its SHA-256 digest is stored."""

    issued = _admin(lambda admin: admin.issue_key(account, label, create=True))
    typer.echo(issued.secret)


@keys_app.command("list")
def keys_list(
    account: Annotated[str, typer.Option(help="Account name.")], as_json: JsonOption = False
) -> None:
    """List an account's keys: id, prefix, label, created, revoked (the keys themselves are not stored)."""
    found = _admin(lambda admin: admin.list_keys(account))
    if as_json:
        print_json_lines(key_record(key) for key in found)
        return
    print_columns(
        ("id", "prefix", "label", "created", "revoked"),
        (
            (
                key.id,
                key.prefix + "…",
                key.label,
                key.created_at.isoformat(timespec="seconds"),
                key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
            )
            for key in found
        ),
    )


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key's id (see `keys list`).")]) -> None:
    """Revoke a key; requests with it are refused from now on."""
    _admin(lambda admin: admin.revoke_key(key_id))
    typer.echo(f"revoked {key_id}")


@accounts_app.command("create")
def accounts_create(
    name: Annotated[str, typer.Argument(help="Account name.")],
    plan: Annotated[str | None, typer.Option(help="Plan name (see `plans list`).")] = None,
) -> None:
    account = _admin(lambda admin: admin.create_account(name, plan))
    typer.echo(f"{account.id} {account.name}")


@accounts_app.command("list")
def accounts_list(as_json: JsonOption = False) -> None:
    """List the accounts: id, name, status, plan, disabled models, created."""
    found = _admin(lambda admin: admin.list_accounts())
    if as_json:
        print_json_lines(account.as_dict() for account in found)
        return
    print_columns(
        ("id", "name", "status", "plan", "disabled models", "created"),
        (
            (
                account.id,
                account.name,
                account.status.value,
                account.plan or "(default)",
                ", ".join(account.disabled_models),
                account.created_at.isoformat(timespec="seconds"),
            )
            for account in found
        ),
    )


@accounts_app.command("suspend")
def accounts_suspend(
    name: Annotated[str, typer.Argument(help="Account name.")],
    reason: Annotated[str | None, typer.Option(help="Shown to the account's callers.")] = None,
) -> None:
    """Refuse every request of the account (ACCOUNT_SUSPENDED) until it is unsuspended."""
    _admin(lambda admin: admin.set_status(name, True, reason))
    typer.echo(f"suspended {name}")


@accounts_app.command("unsuspend")
def accounts_unsuspend(name: Annotated[str, typer.Argument(help="Account name.")]) -> None:
    _admin(lambda admin: admin.set_status(name, False))
    typer.echo(f"unsuspended {name}")


@accounts_app.command("set-plan")
def accounts_set_plan(
    name: Annotated[str, typer.Argument(help="Account name.")],
    plan: Annotated[str, typer.Argument(help="Plan name, or 'default' for the deployment's limits.")],
) -> None:
    _admin(lambda admin: admin.set_plan(name, None if plan == "default" else plan))
    typer.echo(f"{name} is on plan {plan}")


@accounts_app.command("disable-model")
def accounts_disable_model(
    name: Annotated[str, typer.Argument(help="Account name.")],
    model: Annotated[str, typer.Argument(help="Model slug.")],
) -> None:
    """Refuse this model to this account (MODEL_NOT_AUTHORIZED)."""
    _admin(lambda admin: admin.set_model_enabled(name, model, False))
    typer.echo(f"{model} disabled for {name}")


@accounts_app.command("enable-model")
def accounts_enable_model(
    name: Annotated[str, typer.Argument(help="Account name.")],
    model: Annotated[str, typer.Argument(help="Model slug.")],
) -> None:
    _admin(lambda admin: admin.set_model_enabled(name, model, True))
    typer.echo(f"{model} enabled for {name}")


@plans_app.command("set")
def plans_set(
    name: Annotated[str, typer.Argument(help="Plan name (created or replaced).")],
    models: Annotated[str, typer.Option(help="Comma-separated model slugs, or '*' for all.")] = "*",
    rate_limit: Annotated[int | None, typer.Option(help="Requests per window per account.")] = None,
    rate_window_s: Annotated[float, typer.Option(help="The rate window in seconds.")] = 60.0,
    key_rate_limit: Annotated[int | None, typer.Option(help="Requests per window per API key.")] = None,
    concurrency_limit: Annotated[int | None, typer.Option(help="In-flight predictions per account.")] = None,
    prepaid: Annotated[bool, typer.Option(help="Predictions need credits (reserved on submit).")] = False,
    security_screen: Annotated[
        bool,
        typer.Option(
            help="Screen inputs for prompt injection and abuse on the models that opt in to it "
            "([[models]] security_screen); --no-security-screen turns it off for this plan's accounts."
        ),
    ] = True,
) -> None:
    plan = Plan(
        name=name,
        models=tuple(m.strip() for m in models.split(",") if m.strip()),
        rate_limit=rate_limit,
        rate_window_s=rate_window_s,
        key_rate_limit=key_rate_limit,
        concurrency_limit=concurrency_limit,
        prepaid=prepaid,
        security_screen=security_screen,
    )
    _admin(lambda admin: admin.put_plan(plan))
    typer.echo(f"plan {name} saved")


@plans_app.command("list")
def plans_list(as_json: JsonOption = False) -> None:
    """List the plans: name, models, rate per account and per key, concurrency, prepaid, security screen."""
    found = _admin(lambda admin: admin.list_plans())
    if as_json:
        print_json_lines(plan.as_dict() for plan in found)
        return
    print_columns(
        ("name", "models", "rate", "per key", "concurrency", "prepaid", "screen"),
        (
            (
                plan.name,
                ",".join(plan.models),
                f"{plan.rate_limit}/{plan.rate_window_s:g}s" if plan.rate_limit else "-",
                f"{plan.key_rate_limit}/{plan.rate_window_s:g}s" if plan.key_rate_limit else "-",
                str(plan.concurrency_limit or "-"),
                "yes" if plan.prepaid else "no",
                "on" if plan.security_screen else "off",
            )
            for plan in found
        ),
    )


@credits_app.command("grant", context_settings={"ignore_unknown_options": True})
def credits_grant(
    account: Annotated[str, typer.Argument(help="Account name.")],
    amount: Annotated[float, typer.Argument(help="Credits to add.")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the ledger).")] = None,
) -> None:
    credits = _admin(lambda admin: admin.add_credits(account, amount, "grant", note))
    typer.echo(f"{account}: {credits.as_dict()}")


# A negative amount ("-50") reads as the argument it is, not as an unknown option.
@credits_app.command("adjust", context_settings={"ignore_unknown_options": True})
def credits_adjust(
    account: Annotated[str, typer.Argument(help="Account name.")],
    amount: Annotated[float, typer.Argument(help="Credits to add (negative to take, e.g. a chargeback).")],
    note: Annotated[str | None, typer.Option(help="Why (kept in the ledger).")] = None,
) -> None:
    credits = _admin(lambda admin: admin.add_credits(account, amount, "adjust", note))
    typer.echo(f"{account}: {credits.as_dict()}")


@credits_app.command("show")
def credits_show(
    account: Annotated[str, typer.Argument(help="Account name.")],
    entries: Annotated[int, typer.Option(help="How many ledger entries to list, newest first.")] = 20,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object: account, credits and ledger entries.")
    ] = False,
) -> None:
    """Show an account's credits (balance, reserved, available) and its latest ledger entries."""
    found = _admin(lambda admin: admin.credits(account, entries))
    if as_json:
        print_json_lines(
            [
                {
                    "account": found.account.as_dict(),
                    "credits": found.credits.as_dict(),
                    "ledger": [entry.as_dict() for entry in found.ledger],
                }
            ]
        )
        return
    typer.echo(f"{account}: {found.credits.as_dict()}")
    print_columns(
        ("id", "kind", "amount", "prediction", "note", "at"),
        (
            (
                str(entry.id),
                entry.kind,
                f"{from_micros(entry.amount_micros):g}",
                entry.prediction_id or "",
                entry.note or "",
                entry.created_at.isoformat(timespec="seconds"),
            )
            for entry in found.ledger
        ),
    )


@config_app.command("reference")
def config_reference() -> None:
    """Print every setting (name, environment variable, type, limits, default, what it does) as Markdown:
    docs/settings.md is this output."""
    from ..config.reference import render

    typer.echo(render(), nl=False)


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(__version__)


def main() -> None:
    app()


app.command("predict")(predict)
app.add_typer(predictions_app, name="predictions")
