"""Tries one target until it answers (tenacity): backoff, Retry-After, retry budget, deadline."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from gateway.attempts import Answer, AttemptFailed, attempt
from gateway.context import RequestContext
from gateway.deadline import Deadline
from gateway.fallbacks import Target
from gateway.resilience import Resilience
from gateway.retry import Verdict, backoff_s

Try = Callable[[], Awaitable[Answer]]

_log = structlog.get_logger("gateway.upstream")


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, AttemptFailed) and exc.verdict is Verdict.RETRY


def _failure(state: RetryCallState) -> AttemptFailed:
    """The failed attempt tenacity is deciding about."""
    exc = state.outcome.exception() if state.outcome is not None else None
    if not isinstance(exc, AttemptFailed):  # _retriable lets nothing else reach wait and stop
        raise TypeError(f"unexpected retry outcome: {exc!r}")
    return exc


class TargetRetries:
    """The tries of one target. Raises the last AttemptFailed when it gives up; `stop_reason`
    then says why: attempts, retry_after_cap, deadline or budget."""

    def __init__(
        self,
        ctx: RequestContext,
        res: Resilience,
        target: Target,
        deadline: Deadline,
        first_try: Try | None = None,
    ) -> None:
        self._ctx, self._res, self._target, self._deadline = ctx, res, target, deadline
        self._config = ctx.target()[0].retry
        self._budget = res.budgets.for_provider(target.provider.name)
        self._first_try = first_try  # e.g. a hedged pair of attempts
        self._holding_retry = False
        self.stop_reason: str | None = None
        self._answered: AttemptFailed | None = None  # the last try the provider answered

    async def run(self) -> Answer:
        self._budget.enter()
        try:
            # Most requests succeed on their first try: it runs before tenacity is involved
            # (setting up its machinery costs more than a proxied request should).
            try:
                return await self._try()
            except AttemptFailed as failed:
                if not _retriable(failed):
                    raise
                return await self._retry(failed)
        except AttemptFailed as failed:
            # The circuit opened on this request's own failures: the client gets the last
            # real one (the provider's 500, its 429), not a 503 the provider never sent.
            if failed.reason == "circuit_open" and self._answered is not None:
                raise self._answered from None
            raise
        finally:
            self._release_retry()  # a wait cut short (deadline, client gone) holds one
            self._budget.exit()

    async def _retry(self, first: AttemptFailed) -> Answer:
        """Tenacity takes over from the first failure: it decides about that one too."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(_retriable),
            wait=self._wait,
            stop=self._stop,
            before_sleep=self._before_sleep,
            sleep=self._res.sleep,
            reraise=True,
        )
        failure: AttemptFailed | None = first
        try:
            async for tried in retrying:
                with tried:
                    if failure is not None:
                        failed, failure = failure, None
                        raise failed
                    return await self._try()
        finally:
            # Its call state and it refer to each other, and through our callbacks to the
            # request: emptied, it takes nothing of the request to the cycle collector.
            vars(retrying).clear()
        raise RuntimeError("tenacity stopped without an outcome")  # reraise=True raises

    async def _try(self) -> Answer:
        try:
            if self._first_try is not None:
                first, self._first_try = self._first_try, None
                return await first()
            return await attempt(self._ctx, self._res, self._target, self._deadline)
        except AttemptFailed as failed:
            if failed.reason != "circuit_open":
                self._answered = failed
            raise
        finally:
            self._release_retry()

    def _wait(self, state: RetryCallState) -> float:
        """The provider's Retry-After when it sent one, else full-jitter backoff."""
        failed = _failure(state)
        if failed.retry_after_s is not None:
            return failed.retry_after_s
        return backoff_s(self._config, state.attempt_number, self._res.rng)

    def _stop(self, state: RetryCallState) -> bool:
        """Runs after `_wait`; taking a retry-budget slot is the last check, so a slot is
        only held by a retry that will happen."""
        failed, wait = _failure(state), state.upcoming_sleep
        if state.attempt_number >= self._config.attempts:
            reason = "attempts"
        elif failed.retry_after_s is not None and wait > self._config.max_retry_after_s:
            reason = "retry_after_cap"
        elif time.monotonic() + wait >= self._deadline.at:
            reason = "deadline"
        elif not self._budget.try_acquire():
            reason = "budget"
            self._res.stats.retry_budget_exhausted[self._target.provider.name] += 1
        else:
            self._holding_retry = True
            return False
        self.stop_reason = reason
        self._log("retries_stopped", failed, state, reason=reason)
        return True

    def _before_sleep(self, state: RetryCallState) -> None:
        failed = _failure(state)
        self._res.stats.retries[(self._target.provider.name, failed.reason)] += 1
        self._log("retry", failed, state, wait_s=round(state.upcoming_sleep, 3))

    def _release_retry(self) -> None:
        if self._holding_retry:
            self._holding_retry = False
            self._budget.release()

    def _log(
        self, event: str, failed: AttemptFailed, state: RetryCallState, **fields: object
    ) -> None:
        _log.info(
            event,
            request_id=self._ctx.request_id,
            target=self._target.label,
            tries=state.attempt_number,
            failure=failed.reason,
            **fields,
        )
