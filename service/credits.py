"""Kie's credit balance for the metrics and the dashboard: read from Redis, and asked of Kie at
most once a minute across every process (the first caller after a minute asks)."""

from __future__ import annotations

import logging

from service.core.credits import CreditsView, view
from service.errors import UpstreamUnavailable
from service.store.credits import CreditsStore
from service.upstream import KieClient

log = logging.getLogger("tapedeck.credits")


async def current_credits(store: CreditsStore, kie: KieClient | None, now_s: float) -> CreditsView | None:
    """The balance and its burn rate; None until Kie has been asked once (or with no Kie key)."""
    now_ms = int(now_s * 1000)
    if kie is not None and await store.claim_ask(now_ms):
        try:
            await store.record(await kie.credits(), now_ms)
        except UpstreamUnavailable as exc:  # the last known balance is shown meanwhile
            log.warning("Kie credits not refreshed: %s", exc.message)
    return view(await store.samples(), now_s)
