"""A reservation sent twice (its reply lost with a connection, the store client sends it once
more) holds once: a second hold would be one no settle releases. The cache lock it carries
stays its own."""

from __future__ import annotations

from gateway.accounting import local_periods
from gateway.cache.stats import CacheStats
from gateway.cache.storage import CacheStore, Scripts, StoreHealth
from gateway.store import open_store
from gateway.store.accounting import Accounting, Reserved, Scope, held_key

# Room for two requests of 600: a resend held twice would leave none for the second.
SCOPE = Scope("k:resent", "key 'resent'", day_micro=None, month_micro=1_200, month_tokens=None)


async def test_a_reservation_sent_again_is_answered_as_held_and_held_once(
    store_url: str,
) -> None:
    store = open_store(store_url)
    accounting = Accounting(store)
    month = local_periods()[1]
    try:
        first = await accounting.reserve("req-1", 600, 10, 60_000, 100, 0, "resent", [SCOPE])
        again = await accounting.reserve("req-1", 600, 10, 60_000, 100, 0, "resent", [SCOPE])
        (held,) = await accounting.read([held_key(SCOPE.name, f"m{month}")])
        other = await accounting.reserve("req-2", 600, 10, 60_000, 100, 0, "resent", [SCOPE])
        period = (again.day, again.month)
        await accounting.settle("req-1", (500, 8), (600, 10), period, 0, "resent", [SCOPE])
        (after,) = await accounting.read([held_key(SCOPE.name, f"m{month}")])
    finally:
        await store.aclose()
    assert isinstance(first, Reserved)
    assert isinstance(again, Reserved)
    assert (again.held, again.day, again.month) == (True, first.day, first.month)
    assert held == 600  # not 1,200
    # The second request still found room: the resend did not take it.
    assert isinstance(other, Reserved)
    assert other.held
    assert after == 600  # req-2's hold alone once req-1 settled


async def test_a_cache_lock_asked_again_with_its_own_token_is_still_led(store_url: str) -> None:
    """The lock rides along with the reservation: sent again, it must not make its own
    request a follower waiting for itself."""
    store = open_store(store_url)
    cache = CacheStore(
        store,
        Scripts.load(Accounting(store).reserve_script, Accounting(store).settle_script),
        StoreHealth(),
        CacheStats(),
    )
    try:
        first = await cache.lookup("llmgw:c:resent", "token-1", 5.0)
        again = await cache.lookup("llmgw:c:resent", "token-1", 5.0)
        other = await cache.lookup("llmgw:c:resent", "token-2", 5.0)
    finally:
        await store.aclose()
    assert (first.lock, again.lock, other.lock) == ("leader", "leader", "follower")
