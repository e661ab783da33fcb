"""The use cases: everything the HTTP surfaces, the console and the CLI may ask of predictd.

- ``access``: who is calling (API keys, principals, plans) and rate limits
- ``catalog``: the models a caller can see
- ``admission``: every check a submit passes before it is queued
- ``predictions``: the prediction lifecycle (submit, wait, get, follow, cancel, delete, list)
- ``account``: the caller's own credits, ledger, usage, keys, webhook secrets and deliveries
- ``administration``: the operator's accounts, plans, keys and credits
- ``recovery``: what a stop left unfinished, put back to work

Written against the narrow ports of ``core.ports``; only these modules, the store and the composition root
(``deploy``) hold a store.
"""

from __future__ import annotations

from dataclasses import dataclass

from .access import Access
from .account import OwnAccount
from .administration import Administration
from .catalog import Models
from .predictions import Predictions


@dataclass(frozen=True, slots=True)
class UseCases:
    """What a deployment offers the HTTP layer, as the composition root wired it."""

    access: Access
    models: Models
    predictions: Predictions
    account: OwnAccount
    administration: Administration
