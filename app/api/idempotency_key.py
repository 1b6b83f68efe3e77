"""The ``Idempotency-Key`` request header, parsed one way for every write route.

* **Exactly one header.** Two or more ``Idempotency-Key`` fields are refused with 400
  ``idempotency_key_invalid``: which one a client, a proxy or a framework would take is not defined
  (Starlette takes the first), and a retry that happened to carry the headers in another order would
  be a different operation.
* **Surrounding whitespace is stripped, on both sides.** RFC 9110 section 5.5: optional whitespace around a
  field value is not part of it, and HTTP parsers differ on whether they remove it (the one in use removed
  leading but kept trailing whitespace, so ``"k "`` and ``"k"`` were two keys while ``" k"`` and ``"k"``
  were one). After stripping, ``"k"``, ``" k"`` and ``"k "`` are the same key.
* **The key itself**: 1 to 255 characters of printable ASCII (``0x20``-``0x7E``; inner spaces allowed).
  Empty after stripping counts as missing (400 ``idempotency_key_missing``); anything else outside these
  rules is 400 ``idempotency_key_invalid``.

The header is declared required in the OpenAPI document (a missing one is answered 400
``idempotency_key_missing`` by the validation handler of ``app.api.problems``). The dependency is declared
after the route's principal, so authentication still comes first.
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Header, Request

from app.errors import DomainError

HEADER = "idempotency-key"
MAX_LENGTH = 255
_OWS = " \t"  # RFC 9110 optional whitespace
_VALID = re.compile(r"^[\x20-\x7e]{1,255}$")


def parse_idempotency_key(values: list[str]) -> str:
    """The key carried by the ``Idempotency-Key`` field values of one request (as received, in order)."""
    if not values:
        raise DomainError("idempotency_key_missing", "Send an Idempotency-Key header with every write.")
    if len(values) > 1:
        raise DomainError("idempotency_key_invalid",
                          f"Send exactly one Idempotency-Key header; this request has {len(values)}.")
    key = values[0].strip(_OWS)
    if not key:
        raise DomainError("idempotency_key_missing", "The Idempotency-Key header is empty.")
    if len(key) > MAX_LENGTH:
        raise DomainError("idempotency_key_invalid",
                          f"An Idempotency-Key has at most {MAX_LENGTH} characters; this one has {len(key)}.")
    if not _VALID.match(key):
        raise DomainError("idempotency_key_invalid",
                          "An Idempotency-Key is printable ASCII (letters, digits, punctuation, inner spaces).")
    return key


async def idempotency_key(
    request: Request,
    declared: Annotated[str, Header(
        alias="Idempotency-Key",
        description="A unique key per logical operation (1-255 printable ASCII characters; surrounding "
        "whitespace is ignored); a retry with the same key and body replays the original answer. Missing: "
        "400 `idempotency_key_missing`; sent twice or malformed: 400 `idempotency_key_invalid`.",
    )],
) -> str:
    """Dependency: the request's one Idempotency-Key (``declared`` is there for the document: the raw header
    list is read instead, so that a second header is seen)."""
    return parse_idempotency_key(request.headers.getlist(HEADER))


IdempotencyKey = Annotated[str, Depends(idempotency_key)]
