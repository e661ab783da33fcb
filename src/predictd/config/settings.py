"""The one settings object.

Read, by priority: CLI flags, environment (``PREDICTD_*``), a TOML file (``--config`` / ``PREDICTD_CONFIG``),
then defaults.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ..core.domain import ModelInfo

# What predictd keeps in the data folder (see deploy/private_files.py: only its owner may read them).
DATABASE_FILE = "predictd.sqlite3"  # embedded mode's database, unless database_url names another
OUTPUTS_FOLDER = "outputs"  # output images behind their expiring URLs
DEFAULT_ACCOUNT = "default"  # the account a first start creates; serve --demo's account
DEMO_KEY_FILE = "demo-key"  # serve --demo's key, printed again at every start

BUILTIN_MODELS: tuple[dict[str, Any], ...] = (
    {
        "slug": "echo",
        "ref": "predictd.models.echo:Echo",
        "workers": 1,
        "prefetch": 16,  # it answers in microseconds: keep its worker fed while the API process is busy
        "description": "Returns its text input unchanged: a no-op model for tests and benchmarks.",
    },
    {
        "slug": "sleep",
        "ref": "predictd.models.sleep:Sleep",
        "workers": 1,
        "description": "Sleeps for `ms` milliseconds, then returns: a model for timing and cancellation.",
    },
    {
        "slug": "background-remove",
        "ref": "predictd.models.segmentation:BackgroundRemove",
        "workers": 1,
        "timeout_s": 60.0,
        "price": 1.0,
        "description": "Cuts the person out of a photo (MediaPipe selfie segmentation): a PNG with alpha.",
    },
    {
        "slug": "background-change",
        "ref": "predictd.models.segmentation:BackgroundChange",
        "workers": 1,
        "timeout_s": 60.0,
        "price": 1.0,
        "description": "Puts the person in a photo on a new background: a colour or another image.",
    },
    {
        "slug": "pose-detect",
        "ref": "predictd.models.pose:PoseDetect",
        "workers": 1,
        "timeout_s": 60.0,
        "price": 1.0,
        "description": "The 33 body keypoints of the person in a photo (BlazePose); PoseError without one.",
    },
    {
        "slug": "tryon-preview",
        "ref": "predictd.models.pose:TryonPreview",
        "workers": 1,
        "timeout_s": 120.0,
        "price": 2.0,
        "description": "A quick try-on preview: the garment warped onto the torso that BlazePose finds.",
    },
    {
        "slug": "ocr",
        "ref": "predictd.models.ocr:Ocr",
        "workers": 1,
        "timeout_s": 120.0,
        "price": 1.0,
        "description": "Reads the printed text in an image (RapidOCR, PP-OCR on ONNX): lines, boxes, scores.",
    },
    {
        "slug": "text-embed",
        "ref": "predictd.models.embed:TextEmbed",
        "workers": 1,
        "timeout_s": 30.0,
        "price": 0.1,
        "description": "A 384-d unit sentence embedding of a text (all-MiniLM-L6-v2, int8 ONNX).",
    },
)


class ModelConfig(BaseModel):
    """One model served by this deployment: ``ref`` is ``package.module:Class`` or ``path/file.py:Class``."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,99}$",
        description="The model's name in requests (`model`, `model_name`); a built-in's slug replaces it.",
    )
    ref: str = Field(
        pattern=r"^[^:]+:[A-Za-z_][A-Za-z0-9_]*$",
        description="The predictor class: `package.module:Class`, or `path/to/file.py:Class` relative to "
        "the server's working directory.",
    )
    workers: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Worker processes running this model in each process that runs models (the embedded "
        "server, or each `predictd worker`): how many of its predictions run at once there.",
    )
    prefetch: int = Field(
        default=1,
        ge=0,
        le=64,
        description="Predictions a busy slot may send ahead to its worker while more are queued than idle "
        "slots (embedded mode): the worker starts each without waiting for the API process. Raise it for "
        "models that take milliseconds; 0 for long ones of very uneven length, so that none waits behind "
        "another while a slot is idle.",
    )
    timeout_s: float = Field(
        default=600.0, gt=0, description="A prediction running longer fails with `DeadlineExceeded`."
    )
    description: str = Field(default="", description="Shown with the model in `GET /v1/models`.")
    price: float = Field(
        default=1.0, ge=0, description="Credits per prediction, or per second of predict_time."
    )
    price_unit: Literal["prediction", "second"] = Field(
        default="prediction", description="What `price` is for: each prediction, or each second it runs."
    )
    use_cases: list[str] = Field(default_factory=list, description="Use cases a request may declare.")
    blocked_regions: list[str] = Field(default_factory=list, description="Regions (proxy header) refused.")
    security_screen: bool = Field(
        default=False,
        description="Screen this model's inputs for prompt injection and abuse before queueing "
        "(`SECURITY_VIOLATION`; see `[security]`): its `Prompt` inputs, or the inputs `security_fields` "
        "names. Off by default, and for every built-in model.",
    )
    security_fields: list[str] = Field(
        default_factory=list,
        description="The inputs `security_screen` screens, instead of the model's `Prompt` inputs "
        "(top-level input names; strings inside lists and objects there are screened too).",
    )

    def info(
        self,
        *,
        available: bool,
        schemas: tuple[dict[str, Any], dict[str, Any]] | None,
        status_detail: str = "",
        setup_failed: bool = False,
    ) -> ModelInfo:
        """The model as the API shows it, given what its workers report."""
        return ModelInfo(
            slug=self.slug,
            description=self.description,
            available=available,
            input_schema=schemas[0] if schemas else None,
            output_schema=schemas[1] if schemas else None,
            status_detail=status_detail,
            setup_failed=setup_failed,
            price=self.price,
            price_unit=self.price_unit,
            timeout_s=self.timeout_s,
            use_cases=tuple(self.use_cases),
            blocked_regions=tuple(self.blocked_regions),
            security_fields=tuple(self.security_fields) if self.security_screen else None,
        )


class MediaSettings(BaseModel):
    """Limits on input images fetched or decoded by workers (see predictd.media and predictd.outbound)."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0, description="Largest input image, in bytes.")
    max_pixels: int = Field(
        default=40_000_000, gt=0, description="Largest input image, in pixels (decompression bombs)."
    )
    connect_timeout_s: float = Field(default=5.0, gt=0, description="Connecting to an image's host.")
    read_timeout_s: float = Field(default=10.0, gt=0, description="Longest wait for the next bytes.")
    total_timeout_s: float = Field(
        default=30.0, gt=0, description="Whole fetch of one image, redirects included (slow senders)."
    )
    max_redirects: int = Field(default=3, ge=0, description="Redirects followed, each checked again.")
    allow_private: bool = Field(default=False, description="Fetch from loopback / private addresses too.")
    allowed_networks: list[str] = Field(default_factory=list, description="CIDRs fetched even if private.")
    max_total_inline_bytes: int = Field(
        default=50 * 1024 * 1024, gt=0, description="Pre-queue cap on all data-URI media of one request."
    )


# Webhook retries: quick at first, then hourly-ish, for roughly three days.
DEFAULT_WEBHOOK_SCHEDULE_S = (
    5.0,
    30.0,
    120.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    14400.0,
    28800.0,
    43200.0,
    86400.0,
    86400.0,
)


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule_s: list[float] = Field(
        default_factory=lambda: list(DEFAULT_WEBHOOK_SCHEDULE_S), description="Delays between attempts."
    )
    attempt_timeout_s: float = Field(
        default=10.0, gt=0, description="Longest one attempt takes, from DNS to the answer's head."
    )
    concurrency: int = Field(default=8, ge=1, le=64, description="Attempts in flight at once, per process.")
    receiver_concurrency: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Attempts in flight at once to one receiver (host and port), per process: a slow "
        "receiver's backlog waits for its own slots while everyone else's webhooks go out.",
    )
    rotation_grace_s: float = Field(
        default=86400.0, ge=0, description="How long a rotated secret still signs."
    )
    allow_private: bool = Field(
        default=False,
        description="Deliver to loopback / private / link-local addresses too (refused by default).",
    )
    allowed_networks: list[str] = Field(
        default_factory=list, description='CIDRs delivered to even if private, e.g. `["10.0.0.0/8"]`.'
    )


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suspend_after: int = Field(default=5, ge=1, description="Violations in window_s that suspend an account.")
    window_s: float = Field(default=3600.0, gt=0, description="The window suspend_after counts in.")
    rules_file: Path | None = Field(default=None, description="Extra screening rules (TOML), added to ours.")
    never_suspend: list[str] = Field(
        default_factory=lambda: [DEFAULT_ACCOUNT],
        description="Accounts (by name) that suspend_after never suspends; their violations are still "
        "refused and logged. By default the account a first start creates (and `serve --demo` prints a "
        "key for), so that trying the screen never locks the operator out.",
    )


class LegalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    region_header: str = Field(default="x-client-region", description="Set by the trusted proxy.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="CIDRs of the proxies in front of predictd: only a connection from one of them has its "
        "region header read, and its X-Forwarded-For followed to the right-most address outside them.",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, cidrs: list[str]) -> list[str]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an IP network (e.g. 10.0.0.0/8)") from None
        return cidrs


class AccessSettings(BaseModel):
    """What one client address, or one presented key, may try per ``window_s`` before it is told to wait
    (429 with Retry-After). Counted with the rate limits' GCRA: a burst of the whole allowance, then one
    more every ``window_s / allowance``; in this process embedded, in Redis scaled out."""

    model_config = ConfigDict(extra="forbid")

    window_s: float = Field(default=60.0, gt=0, description="Seconds over which each allowance is counted.")
    sign_ins_per_address: int = Field(
        default=30, ge=1, description="Console sign-in attempts per client address (failed ones too)."
    )
    sign_ins_per_key: int = Field(default=10, ge=1, description="Console sign-in attempts per presented key.")
    failed_keys_per_address: int = Field(
        default=60, ge=1, description="Requests with an API key no account holds, per client address."
    )


class ConsoleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sessions_per_account: int = Field(
        default=20, ge=1, description="Live web console sessions per account; one more ends its oldest."
    )
    max_sessions: int = Field(
        default=10_000, ge=1, description="Live web console sessions in all; one more ends the oldest."
    )


class ModerationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text_conservative_threshold: float = Field(
        default=0.5, ge=0, le=1, description="Prompts: offensive-language score refused at `conservative`."
    )
    text_permissive_threshold: float = Field(
        default=0.9, ge=0, le=1, description="Prompts: offensive-language score refused at `permissive`."
    )
    image_conservative_threshold: float = Field(
        default=0.4, ge=0, le=1, description="Images, in and out: NSFW probability refused at `conservative`."
    )
    image_permissive_threshold: float = Field(
        default=0.85, ge=0, le=1, description="Images, in and out: NSFW probability refused at `permissive`."
    )
    blocked_terms: list[str] = Field(default_factory=list, description="Operator word list for prompts.")


class HttpSettings(BaseModel):
    """Limits the HTTP connection enforces before any route runs (api/connection/protocol.py). Each answers
    with its own status: 414 and 431 for an oversized head, 408 for a head or body that does not arrive
    in time, 503 for a connection beyond the caps."""

    model_config = ConfigDict(extra="forbid")

    max_request_line_bytes: int = Field(
        default=8192,
        ge=64,
        description="Longest request line (method, path and query, version); longer: 414.",
    )
    max_header_bytes: int = Field(
        default=8192, ge=64, description="Longest header line (name and value); longer: 431."
    )
    max_headers: int = Field(default=100, ge=1, description="Most headers in one request; more: 431.")
    max_head_bytes: int = Field(
        default=65536, ge=64, description="Most bytes of a request line and its headers together; more: 431."
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Longest from a request's first byte to the end of its headers; then 408.",
    )
    min_body_rate: int = Field(
        default=1024,
        ge=0,
        description="Bytes per second a request body must bring over each body_rate_window_s, else 408 "
        "(0: no limit). A body has no overall deadline.",
    )
    body_rate_window_s: float = Field(
        default=10.0,
        gt=0,
        description="The period min_body_rate is measured over; the first is the body's grace.",
    )
    keep_alive_s: float = Field(
        default=5.0,
        gt=0,
        description="A connection with no request and no answer under way is closed after this.",
    )
    max_connections: int = Field(
        default=4096,
        ge=1,
        description="Open connections, all clients together; beyond, a new one is answered 503.",
    )
    max_connections_per_client: int = Field(
        default=256,
        ge=1,
        description="Open connections from one client address (IPv6: one /64), except the legal "
        "trusted_proxies; beyond, a new one is answered 503.",
    )


class CacheSettings(BaseModel):
    """What one server process keeps of predictions in memory to answer status reads without the database
    (the remembered rows of embedded mode's SQLite store, the rendered bodies of status reads)."""

    model_config = ConfigDict(extra="forbid")

    max_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="Bytes of predictions (inputs and outputs counted as their JSON) that a server process "
        "keeps in memory, all its caches together (half the store's remembered rows, half the rendered "
        "status bodies); past it the oldest go. A prediction weighing more than about a sixteenth of it "
        "is not kept (0: none is). Reported as the `predictd_cache_bytes` gauge of /metrics.",
    )

    @property
    def store_bytes(self) -> int:
        return self.max_bytes // 2

    @property
    def status_bytes(self) -> int:
        return self.max_bytes - self.store_bytes


class ListSettings(BaseModel):
    """How much of each prediction a list of predictions carries (`GET /v1/predictions`)."""

    model_config = ConfigDict(extra="forbid")

    field_max_bytes: int = Field(
        default=64 * 1024,
        ge=0,
        description="A prediction's `input` or `output` whose JSON is longer than this is left out of a "
        "list: it reads `null`, with `input_elided` / `output_elided` true; `urls.get` gives it whole.",
    )
    max_bytes: int = Field(
        default=2 * 1024 * 1024,
        ge=0,
        description="The inputs and outputs of one page of a list together: once they weigh this much, the "
        "inputs and outputs of the page's further predictions are left out (elided) as well.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PREDICTD_", extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="Address the API server listens on; `0.0.0.0` (or the machine's address) to be reached "
        "from other machines, e.g. behind a load balancer.",
    )
    port: int = Field(default=8000, ge=0, le=65535, description="Port the API server listens on.")
    data_dir: Path = Field(
        default=Path("predictd-data"),
        description="The data folder: the SQLite database (unless database_url is set), output images, the "
        "demo key. Relative paths are from the working directory.",
    )
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; default: SQLite in data_dir.")
    redis_url: str | None = Field(
        default=None,
        description="Redis URL: set, the server runs scaled out (dispatch, limits, signals through Redis; "
        "predictions run on `predictd worker` processes).",
    )
    redis_prefix: str = Field(
        default="predictd", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Prefix of every Redis key."
    )
    worker_lease_s: float = Field(
        default=15.0, gt=0, description="A worker silent this long loses its predictions to another."
    )
    worker_metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="`predictd worker` serves Prometheus metrics on this port."
    )
    sweep_interval_s: float = Field(
        default=5.0, gt=0, description="How often accepted work that Redis lost is looked for."
    )
    builtin_models: bool | list[str] = Field(
        default=True, description="Serve the built-in models: all (true), none (false), or these slugs."
    )
    models: list[ModelConfig] = Field(
        default_factory=list,
        description="Models served beside the built-in ones (or instead of one, with its slug), one "
        "`[[models]]` table each.",
    )

    await_timeout_s: float = Field(default=60.0, gt=0, description="Longest a submit with await blocks.")
    max_body_bytes: int = Field(
        default=10 * 1024 * 1024, gt=0, description="Largest request body (INFRASTRUCTURE_ERROR beyond)."
    )
    max_attempts: int = Field(default=2, ge=1, description="Runs of one prediction when workers die.")
    worker_start_timeout_s: float = Field(
        default=120.0, gt=0, description="A model worker whose setup() takes longer fails to start."
    )
    shutdown_grace_s: float = Field(
        default=10.0,
        ge=0,
        description="On stop, running predictions get this long to finish; the rest run again after.",
    )
    cancel_grace_s: float = Field(
        default=2.0, gt=0, description="A worker still running a cancelled prediction after this is killed."
    )
    sqlite_busy_timeout_ms: int = Field(
        default=5000, ge=0, description="A SQLite write waits this long for another's lock, then fails."
    )
    postgres_lock_timeout_ms: int = Field(
        default=5000, ge=0, description="A PostgreSQL write waits this long for a lock, then fails."
    )
    outputs_ttl_s: float = Field(default=72 * 3600, gt=0, description="How long output image URLs live.")
    failed_inputs_ttl_s: float = Field(
        default=72 * 3600,
        gt=0,
        description="How long a failed (or timed-out) prediction keeps its inputs after it ended, shown by "
        "`GET /v1/predictions/{id}` and run again from the console; then they are removed "
        "(`data_removed: true`), within this long again or 10 minutes, whichever is less.",
    )
    rate_limit: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="Requests per rate_window_s per account."
    )
    rate_window_s: float = Field(
        default=60.0,
        gt=0,
        le=365 * 86400,
        description="The window of rate_limit, in seconds (a year at most).",
    )
    concurrency_limit: int | None = Field(
        default=None, ge=1, le=2**31 - 1, description="In-flight predictions per account."
    )
    media: MediaSettings = Field(
        default_factory=MediaSettings,
        description="Input images (URLs and data URIs) that workers fetch and decode: sizes, timeouts, and "
        "the addresses they may be fetched from.",
    )
    moderation: ModerationSettings = Field(
        default_factory=ModerationSettings,
        description="Content moderation: a score over a `moderation_level`'s threshold is refused at that "
        "level (prompts before queueing, images in the pipeline).",
    )
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings,
        description="Webhook deliveries: retries, timeouts, and the addresses they may be sent to (a guard "
        "of their own: `[media]`'s settings do not apply to webhooks).",
    )
    security: SecuritySettings = Field(
        default_factory=SecuritySettings,
        description="Screening of inputs for prompt injection and abuse (SECURITY_VIOLATION), for the "
        "models that opt in (`[[models]] security_screen`) and the plans that keep it on, and the "
        "suspension of accounts that keep trying.",
    )
    legal: LegalSettings = Field(
        default_factory=LegalSettings,
        description="Where a request comes from, for the models' `blocked_regions` (LEGAL_REASONS).",
    )
    access: AccessSettings = Field(
        default_factory=AccessSettings,
        description="What one client address, or one presented key, may try per `window_s` before it is "
        "told to wait (429 with Retry-After): web console sign-ins, and API requests with a key no account "
        "holds. Counted as rate limits are (GCRA: a burst of the whole allowance, then one more every "
        "`window_s / allowance`), in memory embedded and in Redis scaled out.",
    )
    console: ConsoleSettings = Field(
        default_factory=ConsoleSettings,
        description="The web console's sessions: how many one account, and all together, may keep open.",
    )
    http: HttpSettings = Field(
        default_factory=HttpSettings,
        description="The HTTP connection's own limits, before any route runs: the size of a request's head, "
        "how fast its head and body must arrive, idle connections, and connections per client and in all.",
    )
    cache: CacheSettings = Field(
        default_factory=CacheSettings,
        description="Memory of predictions a server process keeps for fast status reads, bounded in bytes.",
    )
    lists: ListSettings = Field(
        default_factory=ListSettings,
        description="Lists of predictions: inputs and outputs past a size are left out, each with a link to "
        "the whole prediction, so that one page stays a few megabytes.",
    )
    admin_key: str | None = Field(
        default=None, min_length=24, description="Bearer key for /admin endpoints (env PREDICTD_ADMIN_KEY)."
    )
    default_plan: str | None = Field(default=None, description="Plan of accounts that have none.")
    idempotency_ttl_s: float = Field(
        default=86400.0, gt=0, description="How long an Idempotency-Key answers the prediction it made."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")
    log_json: bool = Field(default=False, description="Log one JSON object a line instead of text.")

    @field_validator("builtin_models")
    @classmethod
    def _known_builtins(cls, wanted: bool | list[str]) -> bool | list[str]:
        if isinstance(wanted, list):
            known = {m["slug"] for m in BUILTIN_MODELS}
            unknown = sorted(set(wanted) - known)
            if unknown:
                raise ValueError(f"unknown built-in model(s) {unknown}; built-in: {sorted(known)}")
        return wanted

    @field_validator("models")
    @classmethod
    def _unique_slugs(cls, models: list[ModelConfig]) -> list[ModelConfig]:
        seen: set[str] = set()
        for m in models:
            if m.slug in seen:
                raise ValueError(f"model slug {m.slug!r} is listed twice")
            seen.add(m.slug)
        return models

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = os.environ.get("PREDICTD_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / OUTPUTS_FOLDER

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return async_driver_url(self.database_url)
        return f"sqlite:///{(self.data_dir / DATABASE_FILE).resolve()}"

    @property
    def scaled_out(self) -> bool:
        return self.redis_url is not None

    @property
    def all_models(self) -> list[ModelConfig]:
        configured = {m.slug: m for m in self.models}
        wanted = self.builtin_models
        builtin = [
            ModelConfig(**m)
            for m in BUILTIN_MODELS
            if wanted is True or (isinstance(wanted, list) and m["slug"] in wanted)
        ]
        return [m for m in builtin if m.slug not in configured] + list(configured.values())


def async_driver_url(url: str) -> str:
    """Plain ``postgresql://`` URLs name the async driver predictd runs on. SQLite URLs are taken as they
    are, whatever driver they name (``sqlite+aiosqlite://`` included): the store always uses the standard
    sqlite3 module (see store/engines.py)."""
    for plain, driver in (
        ("postgresql://", "postgresql+asyncpg://"),
        ("postgres://", "postgresql+asyncpg://"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    return url


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build the settings; ``overrides`` are CLI flags (``None`` means "not given")."""
    if config_file is not None:
        os.environ["PREDICTD_CONFIG"] = str(config_file)
    given = {k: v for k, v in overrides.items() if v is not None}
    return Settings(**given)
