"""Every check a submit passes before it is queued: the model exists and is served, the account may use it
(plan, operator's switches, region, use case), the input matches the model's schema, inline media fit, and
text passes moderation and, where the model opts in and the plan keeps it on, the security screen. Each
refusal is the catalog's error naming what failed."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import orjson
import structlog

from ..core.domain import AccountStatus, ModelInfo, Principal, utcnow
from ..core.ports import AccountStore
from ..core.schema_marks import MODERATION_LEVEL
from ..core.validation import InputRules, validate_input
from ..errors import ApiError, ErrorId
from ..media import data_uri_size
from ..safety import ModerationLevel, ModerationUnavailable
from ..safety.security import SecurityScreen
from ..safety.text import TextModerator
from ..webhooks import WebhookTarget, refusal
from .catalog import Models
from .policy import Policy

log = structlog.get_logger("predictd.admission")


@dataclass(frozen=True, slots=True)
class SubmitRequest:
    model: str
    input: Any
    source: str = "api"
    webhook: WebhookTarget | None = None
    idempotency_key: str | None = None
    use_case: str | None = None
    region: str | None = None  # from the trusted proxy's header, if any
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """What makes two submits "the same request" for an Idempotency-Key."""
        hook = self.webhook.to_extra() if self.webhook else None
        if hook:
            hook.pop("base_url")
        canonical = orjson.dumps(
            {"model": self.model, "input": self.input, "webhook": hook}, option=orjson.OPT_SORT_KEYS
        )
        return hashlib.sha256(canonical).hexdigest()


class Admission:
    def __init__(
        self,
        models: Models,
        accounts: AccountStore,
        policy: Policy,
        *,
        security: SecurityScreen | None = None,
        text_moderator: TextModerator | None = None,
    ) -> None:
        self._models = models
        self._accounts = accounts
        self._policy = policy
        self._security = security
        self._text_moderator = text_moderator
        self._rules: dict[str, InputRules] = {}  # per model slug

    async def admit(self, principal: Principal, request: SubmitRequest) -> ModelInfo:
        """The model the request may be queued for; raises the first check it fails."""
        info = self._models.get(request.model)
        _check_entitlement(principal, info, request)
        self._check_webhook(request.webhook)
        rules = self._input_rules(info)
        if not info.available and info.setup_failed:
            raise ApiError(
                ErrorId.MODEL_SETUP_FAILED, f"Model {info.slug!r} cannot run: {info.status_detail}."
            )
        if not info.available or rules is None:
            raise ApiError(
                ErrorId.MODEL_UNAVAILABLE,
                f"Model {info.slug!r} is unavailable: {info.status_detail or 'no worker can run it'}.",
                retry_after=5,
            )
        validate_input(rules, request.input)
        self._check_inline_media(rules, request.input)
        await self._screen_security(principal, screened_fields(principal, info, rules), request.input)
        self._moderate_text(rules, request.input)
        return info

    def _check_webhook(self, target: WebhookTarget | None) -> None:
        """A receiver the delivery guard is sure to refuse fails the submit, not three days of attempts."""
        if target is None:
            return
        why = refusal(target, self._policy.webhook_allow_private, self._policy.webhook_allowed_networks)
        if why is not None:
            raise ApiError(ErrorId.INVALID_INPUT, why)

    def _input_rules(self, info: ModelInfo) -> InputRules | None:
        if info.input_schema is None:
            return None
        rules = self._rules.get(info.slug)
        if rules is None or rules.schema is not info.input_schema:  # a worker's restart may replace it
            rules = self._rules[info.slug] = InputRules.of(info.input_schema)
        return rules

    def _check_inline_media(self, rules: InputRules, inputs: dict[str, Any]) -> None:
        total = 0
        for name in rules.image_fields:
            value = inputs.get(name)
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, str):
                    total += data_uri_size(item)
        if total > self._policy.max_inline_media_bytes:
            raise ApiError(
                ErrorId.INFRASTRUCTURE_ERROR,
                f"Inline media in this request total {total} bytes, over this deployment's "
                f"{self._policy.max_inline_media_bytes} byte limit; send URLs instead.",
            )

    async def _screen_security(
        self, principal: Principal, fields: tuple[str, ...], inputs: dict[str, Any]
    ) -> None:
        if self._security is None or not fields:
            return
        finding = self._security.screen({name: inputs[name] for name in fields if name in inputs})
        if finding is None:
            return
        since = utcnow() - timedelta(seconds=self._policy.security_window_s)
        count = await self._accounts.record_security_event(
            principal.account.id, finding.rule_id, finding.field, since
        )
        exempt = principal.account.name in self._policy.never_suspend
        log.warning(
            "security violation",
            account=principal.account.id,
            rule=finding.rule_id,
            field=finding.field,
            count=count,
            exempt=exempt,
        )
        if count >= self._policy.suspend_after and not exempt:
            await self._accounts.update_account(
                principal.account.id,
                status=AccountStatus.SUSPENDED,
                status_reason=f"{count} security violations within {self._policy.security_window_s:g} s",
            )
        raise ApiError(
            ErrorId.SECURITY_VIOLATION,
            f"{finding.field} was flagged as malicious ({finding.category}: {finding.rule_id})."
            + ("" if exempt else " Repeated violations suspend the account."),
        )

    def _moderate_text(self, rules: InputRules, inputs: dict[str, Any]) -> None:
        fields = rules.moderated_fields
        if not fields or self._text_moderator is None:
            return
        level = ModerationLevel(inputs.get(MODERATION_LEVEL, ModerationLevel.CONSERVATIVE))
        for name in fields:
            text = inputs.get(name)
            if not isinstance(text, str):
                continue
            try:
                verdict = self._text_moderator.check(text, level)
            except ModerationUnavailable as exc:
                raise ApiError(
                    ErrorId.MODERATION_ERROR, f"input.{name} could not be moderated: {exc}", retry_after=5
                ) from None
            if not verdict.allowed:
                raise ApiError(ErrorId.CONTENT_POLICY_VIOLATION, f"input.{name}: {verdict.reason}")


def screened_fields(principal: Principal, info: ModelInfo, rules: InputRules) -> tuple[str, ...]:
    """The inputs the security screen reads: none unless the model opts in and the account's plan keeps
    the screen on; then the ones the model names, or else its ``Prompt`` inputs. Free text in any other
    input (an echo's text, a file path a user asks about) is the model's business, not an attack."""
    if info.security_fields is None or not principal.plan.security_screen:
        return ()
    return info.security_fields or rules.moderated_fields


def _check_entitlement(principal: Principal, info: ModelInfo, request: SubmitRequest) -> None:
    if not principal.plan.allows(info.slug):
        raise ApiError(
            ErrorId.MODEL_ACCESS_DENIED,
            f"Plan {principal.plan.name!r} does not include model {info.slug!r}.",
        )
    if info.slug in principal.account.disabled_models:
        raise ApiError(
            ErrorId.MODEL_NOT_AUTHORIZED,
            f"Model {info.slug!r} is disabled for this account by its operator.",
        )
    if request.region is not None and request.region.lower() in {r.lower() for r in info.blocked_regions}:
        raise ApiError(
            ErrorId.LEGAL_REASONS, f"Model {info.slug!r} is not offered in region {request.region!r}."
        )
    if request.use_case is not None and request.use_case not in info.use_cases:
        offered = ", ".join(info.use_cases) or "none declared"
        raise ApiError(
            ErrorId.USE_CASE_NOT_SUPPORTED,
            f"Model {info.slug!r} does not support use case {request.use_case!r} (supported: {offered}).",
        )
