"""Voucher codes as people read them, and the bound on guessing them.

A code is 12 characters of a 32-letter alphabet without the look-alikes 0, 1, I and O: 60 random bits, drawn in
Postgres from its cryptographically strong generator (``ledger.voucher_code`` in migrations/functions/95_rewards.sql)
and unique per program. It is shown in groups of four for reading aloud (``K7QM-3XDP-W9TF``) and accepted in any
case, with or without hyphens and spaces.

Guessing: a key's failed lookups (a code that names no voucher of its program) are counted in a token bucket per key
and process (``FailureGuard``); once it is empty, every lookup by code with that key is answered 429
``rate_limited`` until it refills. With the defaults (a burst of 20, then 10 a minute) a key can try about 14,400
codes a day; with a million live vouchers in a program that finds one with probability 14,400 * 10^6 / 2^60, about
one in eighty million per day.
"""

from __future__ import annotations

import math
import re
import time
from typing import Annotated, Any
from uuid import UUID

from pydantic import BeforeValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from app.errors import DomainError

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
LENGTH = 12
BITS = LENGTH * 5
_CANONICAL = re.compile(f"[{ALPHABET}]{{{LENGTH}}}")
_SEPARATORS = re.compile(r"[\s\-]")


def canonical(text: str) -> str | None:
    """The stored form of a code as someone typed it (any case, hyphens and spaces ignored), or None when it cannot
    be a code."""
    if not text.isascii():
        return None
    code = _SEPARATORS.sub("", text).upper()
    return code if _CANONICAL.fullmatch(code) else None


def grouped(code: str) -> str:
    """The displayed form: groups of four joined by hyphens."""
    return "-".join(code[i:i + 4] for i in range(0, len(code), 4))


def _code(value: Any) -> Any:
    if not isinstance(value, str):
        raise PydanticCustomError("voucher_code", "Must be a voucher code such as \"K7QM-3XDP-W9TF\"")
    code = canonical(value)
    if code is None:
        raise PydanticCustomError("voucher_code", "Not a voucher code: 12 of the letters and digits "
                                  f"{ALPHABET} (0, 1, I and O are never used), hyphens optional")
    return code


VoucherCode = Annotated[
    str, BeforeValidator(_code),
    WithJsonSchema({"type": "string", "minLength": 12, "maxLength": 64, "examples": ["K7QM-3XDP-W9TF"],
                    "description": "A voucher code, any case, hyphens and spaces optional"}),
]
"""A voucher code in a request body: validated and turned into its stored form."""


def code_of(text: str) -> str:
    """A code from a path: its stored form, or 422 ``validation_error``."""
    code = canonical(text)
    if code is None:
        raise DomainError("validation_error", "Not a voucher code: 12 of the letters and digits "
                          f"{ALPHABET} (0, 1, I and O are never used), hyphens optional.",
                          errors=[{"loc": ["path", "code"], "msg": "not a voucher code", "type": "voucher_code"}])
    return code


class FailureGuard:
    """Failed voucher lookups per API key and process: a token bucket of ``burst`` failures refilled at
    ``per_minute``. ``check`` before a lookup (429 when empty), ``failed`` after one that found nothing.
    ``per_minute`` 0: no bound."""

    def __init__(self, per_minute: float, burst: int) -> None:
        self.rate = per_minute / 60
        self.burst = float(max(burst, 1))
        self._buckets: dict[UUID, tuple[float, float]] = {}

    def _tokens(self, key_id: UUID, now: float) -> float:
        tokens, stamp = self._buckets.get(key_id, (self.burst, now))
        return min(self.burst, tokens + (now - stamp) * self.rate)

    def check(self, key_id: UUID) -> None:
        if self.rate <= 0:
            return
        tokens = self._tokens(key_id, time.monotonic())
        if tokens < 1:
            retry = max(1, math.ceil((1 - tokens) / self.rate))
            raise DomainError("rate_limited", "Too many lookups of voucher codes that do not exist with this key; "
                              "retry later.", retry_after=retry)

    def failed(self, key_id: UUID) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        self._buckets[key_id] = (max(0.0, self._tokens(key_id, now) - 1), now)
