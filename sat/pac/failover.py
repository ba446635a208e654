"""An organization's PACs in order of preference, used as one PAC, never stamping a CFDI twice.

Stamping a CFDI (identified by the invoice's idempotency key, or by its Sello):
1. Before sending it to a PAC we write down "this CFDI went to PAC X" (in Redis, so every worker
   and a crashed worker's successor see it).
2. A definite answer (a timbre, a rejection, or "never reached the service": connection refused,
   502/503) erases the note; on "never reached" we go on to the next PAC.
3. An answer that never came (read timeout, dropped connection, 500/504: `PacInDoubt`) keeps the
   note: X may have stamped it. The CFDI stays with X, whatever the order says, until X answers
   again and tells us (`recover`: Finkok's `stamped`, SW's re-send with the same customid).
   Only when X says it never stamped it may another PAC stamp it.
A PAC that failed is skipped for new CFDIs for `cooldown` seconds (unless every PAC is cooling
down), so one PAC being down does not slow every invoice down.

Cancellation and status go to the first PAC that answers: SAT, not the PAC, holds that state, and
asking twice is harmless (202 "previously requested").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio import Redis

from sat.cfdi.xmlsafe import UnsafeXmlError, parse_xml

from .base import CancelResult, PacError, StampResult
from .transport import PacInDoubt

log = logging.getLogger(__name__)
_PREFIX = "pac:failover"
_ATTEMPT_TTL = 30 * 24 * 3600  # longer than any retry schedule of a stamping job


def cfdi_key(xml: bytes, idempotency_key: str | None) -> str:
    if idempotency_key:
        return idempotency_key
    try:
        seal = parse_xml(xml).get("Sello") or ""
    except UnsafeXmlError:
        seal = ""
    return "sello:" + hashlib.sha256(seal.encode() or xml).hexdigest()


class FailoverPac:
    name = "failover"

    def __init__(self, pacs: Sequence, redis: Redis, *, cooldown_seconds: int = 60):
        if not pacs:
            raise ValueError("FailoverPac needs at least one PAC")
        names = [p.name for p in pacs]
        if len(set(names)) != len(names):
            raise ValueError("each PAC of an organization must have a distinct name")
        self.pacs, self.redis, self.cooldown = list(pacs), redis, cooldown_seconds
        self.by_name = {p.name: p for p in pacs}

    async def aclose(self) -> None:
        for pac in self.pacs:
            close = getattr(pac, "aclose", None)
            if close is not None:
                await close()
        sat = next((p.sat for p in self.pacs if getattr(p, "sat", None) is not None), None)
        if sat is not None:
            await sat.aclose()

    # --- bookkeeping ----------------------------------------------------------------------------
    def _attempt_key(self, key: str) -> str:
        return f"{_PREFIX}:attempt:{key}"

    async def _cooling(self, pac) -> bool:
        return bool(await self.redis.exists(f"{_PREFIX}:down:{pac.name}"))

    async def _mark_down(self, pac) -> None:
        await self.redis.set(f"{_PREFIX}:down:{pac.name}", b"1", ex=self.cooldown)

    async def _order(self) -> list:
        up = [p for p in self.pacs if not await self._cooling(p)]
        return up or list(self.pacs)

    # --- stamping -------------------------------------------------------------------------------
    async def stamp(self, xml: bytes, *, idempotency_key: str | None = None) -> StampResult:
        key = cfdi_key(xml, idempotency_key)
        attempt = self._attempt_key(key)
        owner = await self.redis.get(attempt)
        if owner is not None:
            recovered = await self._settle_doubt(self.by_name.get(owner.decode()), xml, key)
            if recovered is not None:
                await self.redis.delete(attempt)
                return recovered
            await self.redis.delete(attempt)  # the owner answered: it never stamped this CFDI
        last: PacError | None = None
        for pac in await self._order():
            await self.redis.set(attempt, pac.name.encode(), ex=_ATTEMPT_TTL)
            try:
                result = await pac.stamp(xml, idempotency_key=key)
            except PacInDoubt:
                await self._mark_down(pac)
                log.warning("PAC answer lost; CFDI stays with this PAC", extra={"pac": pac.name})
                raise
            except PacError as exc:
                await self.redis.delete(attempt)
                if not exc.transient:
                    raise  # the CFDI (or the account) is wrong: another PAC would say the same
                await self._mark_down(pac)
                last = exc
                log.warning("PAC unavailable, trying the next one", extra={"pac": pac.name, "code": exc.code})
                continue
            await self.redis.delete(attempt)
            return result
        raise last or PacError("PAC_UNAVAILABLE", "Ningún PAC está disponible.", transient=True)

    async def _settle_doubt(self, pac, xml: bytes, key: str) -> StampResult | None:
        """Ask the PAC that may have stamped `xml` what it did; its failures propagate, so the CFDI
        waits for it instead of going elsewhere."""
        if pac is None:  # removed from the organization's list: nobody left to ask
            return None
        recover: Callable[..., Awaitable[StampResult | None]] | None = getattr(pac, "recover", None)
        if recover is None:  # the sandbox: stamping again returns the earlier timbre
            return await pac.stamp(xml, idempotency_key=key)
        return await recover(xml, idempotency_key=key)

    # --- everything SAT decides -----------------------------------------------------------------
    async def _first_answer(self, call: Callable[[object], Awaitable]):
        last: PacError | None = None
        for pac in await self._order():
            try:
                return await call(pac)
            except PacError as exc:
                if not exc.transient:
                    raise
                await self._mark_down(pac)
                last = exc
        raise last or PacError("PAC_UNAVAILABLE", "Ningún PAC está disponible.", transient=True)

    async def cancel(self, uuid: str, rfc: str, reason: str, replacement_uuid: str | None, **kw) -> CancelResult:
        return await self._first_answer(lambda pac: pac.cancel(uuid, rfc, reason, replacement_uuid, **kw))

    async def status(self, uuid: str, **kw) -> str:
        return await self._first_answer(lambda pac: pac.status(uuid, **kw))

    async def pending_cancellations(self, receiver_rfc: str) -> list[str]:
        return await self._first_answer(lambda pac: pac.pending_cancellations(receiver_rfc))

    async def answer_cancellations(self, receiver_rfc: str, answers: dict[str, bool]) -> dict[str, str]:
        return await self._first_answer(lambda pac: pac.answer_cancellations(receiver_rfc, answers))
