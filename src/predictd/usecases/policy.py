"""The deployment's rules for accounts without a plan of their own, and the bounds of what one submit may
carry. Set once by the composition root from the settings; read by access and admission."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config.settings import AccessSettings
from ..core.domain import Plan


@dataclass(frozen=True, slots=True)
class Policy:
    """``plan`` applies to accounts without a plan of their own (and ``default_plan_name`` names the plan
    row they get instead, when set)."""

    plan: Plan = field(default_factory=lambda: Plan("default"))
    default_plan_name: str | None = None
    max_inline_media_bytes: int = 50 * 1024 * 1024
    suspend_after: int = 5
    security_window_s: float = 3600.0
    never_suspend: frozenset[str] = frozenset()  # account names suspend_after never suspends
    access: AccessSettings = field(default_factory=AccessSettings)  # sign-ins and failed key checks
    # The webhook address guard's settings: a receiver it is certain to refuse is refused at submit.
    webhook_allow_private: bool = False
    webhook_allowed_networks: tuple[str, ...] = ()
