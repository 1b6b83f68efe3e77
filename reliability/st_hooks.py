"""Schemathesis hooks of ``reliability.fuzz`` (loaded through ``SCHEMATHESIS_HOOKS=reliability.st_hooks``).

Every ledger write needs an Idempotency-Key, which the OpenAPI document declares as a required header. Left to
itself schemathesis fills it with short generated strings that repeat from case to case ("0", "AAA"...), so most
cases would replay an earlier answer or be refused 422 ``idempotency_key_reused`` before their body reaches the
ledger. So nine in ten cases of an operation that takes the header get a fresh key here, and their generated
bodies reach the ledger; the tenth goes as generated. Cases that test the header itself (missing, or a value
the document forbids: schemathesis's coverage scenarios and negative cases) are left alone.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import schemathesis

_rng = random.Random()
HEADER = "idempotency-key"


def _takes_idempotency_key(operation: Any) -> bool:
    try:
        return any(p.name.lower() == HEADER for p in operation.iter_parameters())
    except Exception:
        return False


def _in_headers(location: Any) -> bool:
    return "header" in str(getattr(location, "value", location)).lower()


def _tests_the_header(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    if meta is None:
        return False
    data = getattr(getattr(meta, "phase", None), "data", None)
    named = [(getattr(data, "parameter", None), getattr(data, "parameter_location", None))]
    named += [(getattr(m, "parameter", None), getattr(m, "parameter_location", None))
              for m in getattr(data, "mutations", ()) or ()]
    if any(str(name or "").lower() == HEADER and _in_headers(loc) for name, loc in named):
        return True
    try:  # a negative headers component may be this header's value
        return any(_in_headers(loc) and info.mode.is_negative for loc, info in meta.components.items())
    except Exception:
        return False


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if not _takes_idempotency_key(case.operation) or _tests_the_header(case) or _rng.random() >= 0.9:
        return
    headers = {name: value for name, value in (case.headers or {}).items() if name.lower() != HEADER}
    headers["Idempotency-Key"] = f"fuzz-{uuid.uuid4().hex}"
    case.headers = headers
