"""Every Redis key and channel the scaled-out mode uses, named in one place.

All keys start with the deployment's prefix, so several deployments (or test runs) can share one Redis.
Redis is only a dispatcher and a cache of counters: losing all of it loses no accepted work (see
usecases/recovery.py). The connection itself is made by the composition root (deploy/scaled.py).
"""

from __future__ import annotations

from dataclasses import dataclass

CONSUMER_GROUP = "workers"


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    def stream(self, model: str) -> str:
        """The queue of one model: one entry per prediction to run."""
        return f"{self.prefix}:stream:{model}"

    def queued(self, prediction_id: str) -> str:
        """Present while the prediction has an entry in a stream that no worker has finished."""
        return f"{self.prefix}:queued:{prediction_id}"

    def running(self, prediction_id: str) -> str:
        """Present, with the worker lease as its lifetime, while a live worker runs the prediction."""
        return f"{self.prefix}:running:{prediction_id}"

    def rate(self, key: str) -> str:
        return f"{self.prefix}:rate:{key}"

    def inflight(self, account_id: str) -> str:
        return f"{self.prefix}:inflight:{account_id}"

    @property
    def workers(self) -> str:
        """Sorted set: worker id -> when it last announced itself (epoch seconds)."""
        return f"{self.prefix}:workers"

    @property
    def worker_info(self) -> str:
        """Hash: worker id -> its announcement (models, slots, schemas) as JSON."""
        return f"{self.prefix}:worker-info"

    @property
    def sweeper_lock(self) -> str:
        return f"{self.prefix}:sweeper-lock"

    @property
    def cancel_channel(self) -> str:
        return f"{self.prefix}:cancel"

    @property
    def events_channel(self) -> str:
        return f"{self.prefix}:events"

    def session(self, token_digest: str) -> str:
        """A web console session, by the digest of its cookie's token; lives as long as the session."""
        return f"{self.prefix}:session:{token_digest}"

    def sessions_of_key(self, key_id: str) -> str:
        """Set: the digests of the console sessions opened with an API key (revoking it ends them)."""
        return f"{self.prefix}:session:key:{key_id}"

    def sessions_of_account(self, account_id: str) -> str:
        """Sorted set: an account's console sessions -> when each was opened (ms), oldest ended first."""
        return f"{self.prefix}:session:account:{account_id}"

    @property
    def all_sessions(self) -> str:
        """Sorted set: every console session -> when it was opened (ms), for the global bound."""
        return f"{self.prefix}:session:all"
